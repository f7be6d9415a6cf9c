//! The group's description for external clients: the view and the registered types.

use super::*;

/// The view and the group's types, as the P2P port describes them to clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The current view.
    pub view: View,
    /// The replicated types in declaration order.
    pub types: Vec<TypeInfo>,
}

/// A replicated type of the group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TypeInfo {
    /// Its name.
    pub name: String,
    /// Flat id of its first subgroup.
    pub first_subgroup: usize,
    /// Number of its subgroups.
    pub subgroups: usize,
}

impl GroupInfo {
    /// The flat id of subgroup `index` of type `name`.
    pub fn subgroup_id(&self, name: &str, index: usize) -> Result<usize, LookupError> {
        let t =
            self.types
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| LookupError::UnknownType {
                    name: name.to_string(),
                })?;
        if index >= t.subgroups {
            return Err(LookupError::NoSuchSubgroup {
                type_name: name.to_string(),
                index,
                count: t.subgroups,
            });
        }
        Ok(t.first_subgroup + index)
    }
}
