//! Build script: generates the FFI bindings of the optional system-library backends
//! (`libfabric`, `verbs`). Without those features it does nothing, so the default build needs no
//! system library.
//!
//! For each backend: the library is found with pkg-config, bindgen reads a small header that
//! includes the library's headers, keeps only an allowlist of items, and writes wrappers for the
//! `static inline` functions (most of both data paths is inline) into a C file, which is then
//! compiled with `cc` and linked.
// A build script reports a missing library or a failed generation by panicking with a message.
#![allow(clippy::expect_used, clippy::panic)]

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "libfabric")]
    ffi::libfabric();
    #[cfg(feature = "verbs")]
    ffi::verbs();
}

#[cfg(any(feature = "libfabric", feature = "verbs"))]
mod ffi {
    use std::path::PathBuf;

    struct Spec {
        /// Name of the generated module file and C wrapper.
        name: &'static str,
        /// pkg-config names of the libraries to link.
        libs: &'static [&'static str],
        /// The header bindgen reads.
        header: &'static str,
        functions: &'static str,
        types: &'static str,
        vars: &'static str,
    }

    #[cfg(feature = "libfabric")]
    pub(super) fn libfabric() {
        generate(&Spec {
            name: "libfabric",
            libs: &["libfabric"],
            header: "#include <rdma/fabric.h>\n#include <rdma/fi_domain.h>\n\
                     #include <rdma/fi_endpoint.h>\n#include <rdma/fi_cm.h>\n\
                     #include <rdma/fi_rma.h>\n#include <rdma/fi_eq.h>\n\
                     #include <rdma/fi_errno.h>\n",
            functions: "fi_getinfo|fi_freeinfo|fi_dupinfo|fi_allocinfo|fi_fabric|fi_domain|\
                        fi_close|fi_eq_open|fi_cq_open|fi_passive_ep|fi_endpoint|fi_pep_bind|\
                        fi_ep_bind|fi_enable|fi_listen|fi_getname|fi_connect|fi_accept|\
                        fi_reject|fi_shutdown|fi_eq_read|fi_eq_sread|fi_eq_readerr|fi_cq_read|\
                        fi_cq_sread|fi_cq_readerr|fi_cq_signal|fi_mr_reg|fi_mr_key|fi_mr_desc|\
                        fi_writemsg|fi_recv|fi_strerror|fi_version|fi_cq_strerror|fi_control|\
                        fi_trywait",
            types: "fi_info|fi_.*_attr|fid_.*|fi_cq_data_entry|fi_cq_err_entry|\
                    fi_eq_cm_entry|fi_eq_err_entry|fi_eq_entry|fi_msg_rma|fi_rma_iov|iovec",
            vars: "FI_.*",
        });
    }

    #[cfg(feature = "verbs")]
    pub(super) fn verbs() {
        generate(&Spec {
            name: "verbs",
            libs: &["libibverbs"],
            header: "#include <infiniband/verbs.h>\n",
            functions: "___ibv_query_port|__ibv_reg_mr|ibv_get_device_list|ibv_free_device_list|ibv_get_device_name|\
                        ibv_open_device|ibv_close_device|ibv_alloc_pd|ibv_dealloc_pd|\
                        ibv_reg_mr|ibv_dereg_mr|ibv_create_comp_channel|\
                        ibv_destroy_comp_channel|ibv_create_cq|ibv_destroy_cq|ibv_req_notify_cq|\
                        ibv_get_cq_event|ibv_ack_cq_events|ibv_poll_cq|ibv_create_qp|\
                        ibv_destroy_qp|ibv_modify_qp|ibv_post_send|ibv_post_recv|\
                        ibv_query_port|ibv_query_gid|ibv_query_device|ibv_wc_status_str",
            types: "ibv_.*|ib_uverbs_.*",
            vars: "IBV_.*",
        });
    }

    fn generate(spec: &Spec) {
        let mut includes = Vec::new();
        for lib in spec.libs {
            match pkg_config::Config::new().probe(lib) {
                Ok(found) => includes.extend(found.include_paths),
                Err(e) => panic!(
                    "the `{}` feature of derecho-fabric needs the system library {lib} \
                     (Debian: libfabric-dev / libibverbs-dev, plus libclang-dev and pkg-config): \
                     {e}",
                    spec.name
                ),
            }
        }
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let header = out.join(format!("{}_wrapper.h", spec.name));
        std::fs::write(&header, spec.header).expect("writing the wrapper header");
        let wrappers = out.join(format!("{}_static_fns", spec.name));
        let mut builder = bindgen::Builder::default()
            .header(header.to_string_lossy())
            .allowlist_function(spec.functions)
            .allowlist_type(spec.types)
            .allowlist_var(spec.vars)
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .wrap_static_fns(true)
            .wrap_static_fns_path(&wrappers);
        for dir in &includes {
            builder = builder.clang_arg(format!("-I{}", dir.display()));
        }
        let bindings = builder
            .generate()
            .unwrap_or_else(|e| panic!("bindgen over {} headers failed: {e}", spec.name));
        bindings
            .write_to_file(out.join(format!("{}_sys.rs", spec.name)))
            .expect("writing the bindings");
        let mut cc = cc::Build::new();
        cc.file(wrappers.with_extension("c"))
            .include(&out)
            .warnings(false);
        for dir in &includes {
            cc.include(dir);
        }
        cc.compile(&format!("{}_static_fns", spec.name));
    }
}
