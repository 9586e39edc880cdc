//! `crdgen`: writes the CustomResourceDefinitions into the repository's `crds/` and
//! the Helm chart's `charts/ferry/crds/`, one file per CRD. With `--check` it writes nothing and exits with status 1 when a file
//! there is missing, differs from what the Rust types generate, or is no longer
//! generated.

use std::path::Path;
use std::process::ExitCode;

use ferry_operator::crdgen::{self, REGENERATE, Stale};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => false,
        ["--check"] => true,
        _ => {
            eprintln!("usage: crdgen [--check]");
            return ExitCode::from(2);
        }
    };
    let mut status = ExitCode::SUCCESS;
    for dir in crdgen::output_dirs() {
        let result = if check {
            crdgen::stale_files(&dir)
        } else {
            crdgen::write_all(&dir)
        };
        let changed = match result {
            Ok(changed) => changed,
            Err(err) => {
                eprintln!("crdgen: {}: {err}", dir.display());
                return ExitCode::FAILURE;
            }
        };
        if report(check, &dir, &changed) != ExitCode::SUCCESS {
            status = ExitCode::FAILURE;
        }
    }
    status
}

fn report(check: bool, dir: &Path, changed: &[Stale]) -> ExitCode {
    if changed.is_empty() {
        println!("{} is current", dir.display());
        return ExitCode::SUCCESS;
    }
    for stale in changed {
        let path = dir.join(stale.file_name());
        match (check, stale) {
            (true, _) => println!("{}: {}", path.display(), stale.problem()),
            (false, Stale::Extra(_)) => println!("removed {}", path.display()),
            (false, _) => println!("wrote {}", path.display()),
        }
    }
    if check {
        eprintln!("{} is stale: run `{REGENERATE}`", dir.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
