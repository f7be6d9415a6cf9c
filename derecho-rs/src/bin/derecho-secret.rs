//! Makes and checks the secret files of `[SECURITY] mode = secret`.
//!
//! ```text
//! derecho-secret new FILE     # 32 random bytes as 64 hex digits, mode 0600; never overwrites
//! derecho-secret check FILE   # says whether FILE is a usable secret
//! ```

use std::path::Path;
use std::process::ExitCode;

use derecho::secure::Secret;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, file) = match args.as_slice() {
        [cmd, file] => (cmd.as_str(), Path::new(file)),
        _ => return usage(),
    };
    match cmd {
        "new" => {
            let made = Secret::generate().map_err(|e| e.to_string()).and_then(|s| {
                s.save(file)
                    .map_err(|e| format!("cannot create {}: {e}", file.display()))
            });
            match made {
                Ok(()) => {
                    println!("wrote a new secret to {} (mode 0600)", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("derecho-secret: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "check" => match Secret::load(file) {
            Ok(_) => {
                println!("{} holds a usable secret", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("derecho-secret: {e}");
                ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: derecho-secret new FILE | derecho-secret check FILE");
    ExitCode::from(2)
}
