//! Renders the CustomResourceDefinitions into YAML files for the checked-in `crds/`
//! directory, and tells which files there are stale. The `crdgen` binary and the
//! `crds_current` test both use it, so they can never disagree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The command that regenerates `crds/`, for messages that ask someone to run it.
pub const REGENERATE: &str = "cargo run -p ferry-operator --bin crdgen";

/// The first line of every generated file.
const HEADER: &str = "# Generated from operator/src/crd by `cargo run -p ferry-operator --bin crdgen`. Do not edit.\n";

/// One generated file: its name in `crds/` and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    /// File name, `{group}_{plural}.yaml` (the layout controller-gen uses).
    pub file_name: String,
    /// The CRD as YAML, with a header line.
    pub yaml: String,
}

/// Why generating or checking `crds/` failed.
#[derive(Debug, thiserror::Error)]
pub enum CrdgenError {
    /// A CRD did not serialize to YAML.
    #[error("cannot render {crd} as YAML: {source}")]
    Render {
        /// The CRD's name.
        crd: String,
        /// What the serializer said.
        source: serde_saphyr::SerializeError,
    },
    /// Reading or writing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// How a file in `crds/` differs from what the types generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// The file is missing.
    Missing(String),
    /// The file's contents differ.
    Differs(String),
    /// A YAML file that no type generates any more.
    Extra(String),
}

impl Stale {
    /// The file's name in `crds/`.
    pub fn file_name(&self) -> &str {
        match self {
            Self::Missing(name) | Self::Differs(name) | Self::Extra(name) => name,
        }
    }

    /// What is wrong with the file, in a few words.
    pub fn problem(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing",
            Self::Differs(_) => "differs from what the Rust types generate",
            Self::Extra(_) => "no longer generated",
        }
    }
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file_name(), self.problem())
    }
}

/// Renders every CRD into its file.
pub fn crd_files() -> Result<Vec<CrdFile>, CrdgenError> {
    crate::crd::definitions().iter().map(render).collect()
}

/// Renders one CRD as a YAML document with the generated-file header.
pub fn render(crd: &CustomResourceDefinition) -> Result<CrdFile, CrdgenError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let body = serde_saphyr::to_string(crd).map_err(|source| CrdgenError::Render {
        crd: name.clone(),
        source,
    })?;
    Ok(CrdFile {
        file_name: format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural),
        yaml: format!("{HEADER}{body}"),
    })
}

/// The repository's `crds/` directory (beside this crate's directory).
pub fn crds_dir() -> PathBuf {
    repository().join("crds")
}

/// The Helm chart's copy of the CRDs (`charts/ferry/crds/`): Helm packages only
/// files inside the chart, so the chart carries its own copy, kept equal by crdgen.
pub fn chart_crds_dir() -> PathBuf {
    repository().join("charts/ferry/crds")
}

/// Every directory crdgen writes: `crds/` and the chart's copy.
pub fn output_dirs() -> [PathBuf; 2] {
    [crds_dir(), chart_crds_dir()]
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(".."))
        .to_path_buf()
}

/// Compares `dir` with what the types generate; an empty list means it is current.
pub fn stale_files(dir: &Path) -> Result<Vec<Stale>, CrdgenError> {
    let files = crd_files()?;
    let mut stale = Vec::new();
    for file in &files {
        let path = dir.join(&file.file_name);
        match fs::read_to_string(&path) {
            Ok(current) if current == file.yaml => {}
            Ok(_) => stale.push(Stale::Differs(file.file_name.clone())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                stale.push(Stale::Missing(file.file_name.clone()));
            }
            Err(source) => return Err(CrdgenError::Io { path, source }),
        }
    }
    for name in yaml_files(dir)? {
        if !files.iter().any(|file| file.file_name == name) {
            stale.push(Stale::Extra(name));
        }
    }
    Ok(stale)
}

/// Writes every CRD into `dir` (created if missing), removes YAML files no type
/// generates any more, and returns what changed.
pub fn write_all(dir: &Path) -> Result<Vec<Stale>, CrdgenError> {
    let changed = stale_files(dir)?;
    fs::create_dir_all(dir).map_err(|source| CrdgenError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for file in crd_files()? {
        let path = dir.join(&file.file_name);
        fs::write(&path, &file.yaml).map_err(|source| CrdgenError::Io { path, source })?;
    }
    for stale in &changed {
        if let Stale::Extra(name) = stale {
            let path = dir.join(name);
            fs::remove_file(&path).map_err(|source| CrdgenError::Io { path, source })?;
        }
    }
    Ok(changed)
}

/// Names of the `.yaml` files in `dir`, sorted; none if it does not exist.
fn yaml_files(dir: &Path) -> Result<Vec<String>, CrdgenError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CrdgenError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CrdgenError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_is_written_then_current() {
        let dir = tempfile::tempdir().expect("temp dir");
        let crds = dir.path().join("crds");
        let missing = stale_files(&crds).expect("check");
        assert_eq!(missing.len(), crate::crd::definitions().len());
        assert!(missing.iter().all(|s| matches!(s, Stale::Missing(_))));

        assert_eq!(write_all(&crds).expect("write"), missing);
        assert_eq!(stale_files(&crds).expect("check"), []);
        assert_eq!(
            write_all(&crds).expect("write again"),
            [],
            "nothing to change"
        );
    }

    #[test]
    fn edited_and_extra_files_are_stale_and_fixed() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_all(dir.path()).expect("write");
        let topics = dir.path().join("ferry.dev_topics.yaml");
        fs::write(&topics, "edited by hand\n").expect("edit");
        fs::write(dir.path().join("ferry.dev_old.yaml"), "old\n").expect("extra");
        fs::write(dir.path().join("README"), "not yaml\n").expect("other file");

        let stale = stale_files(dir.path()).expect("check");
        assert_eq!(
            stale,
            [
                Stale::Differs("ferry.dev_topics.yaml".into()),
                Stale::Extra("ferry.dev_old.yaml".into()),
            ]
        );
        write_all(dir.path()).expect("fix");
        assert_eq!(stale_files(dir.path()).expect("check"), []);
        assert!(
            dir.path().join("README").exists(),
            "only YAML files are managed"
        );
    }

    #[test]
    fn files_start_with_the_header() {
        for file in crd_files().expect("render") {
            assert!(file.yaml.starts_with(HEADER), "{}", file.file_name);
            assert!(file.yaml.contains("kind: CustomResourceDefinition\n"));
        }
    }
}
