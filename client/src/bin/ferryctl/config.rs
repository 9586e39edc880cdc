//! Named contexts, like kubeconfig's: a server with its TLS and token settings under
//! a name, in `$FERRY_CONFIG`, else `$XDG_CONFIG_HOME/ferry/config.toml`, else
//! `~/.config/ferry/config.toml`. Flags and their environment variables override
//! the context; the context overrides the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::output::{self, OutputFormat};

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    /// The context used when --context is not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// The contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Connection>,
}

/// Where and how to connect: the settings a context holds (each optional).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Connection {
    /// Broker or gateway address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// CA file for the server's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate file (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// File holding a bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Connection {
    /// `self`'s settings where given, `fallback`'s elsewhere.
    pub fn or(self, fallback: Connection) -> Connection {
        Connection {
            server: self.server.or(fallback.server),
            tls_ca_file: self.tls_ca_file.or(fallback.tls_ca_file),
            tls_cert_file: self.tls_cert_file.or(fallback.tls_cert_file),
            tls_key_file: self.tls_key_file.or(fallback.tls_key_file),
            tls_server_name: self.tls_server_name.or(fallback.tls_server_name),
            token_file: self.token_file.or(fallback.token_file),
        }
    }

    /// Relative file names taken as relative to `dir` (the config file's directory
    /// for what the file holds, the current one for flags being stored).
    fn anchored(mut self, dir: &Path) -> Connection {
        for file in [
            &mut self.tls_ca_file,
            &mut self.tls_cert_file,
            &mut self.tls_key_file,
            &mut self.token_file,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        self
    }
}

/// Where the file is.
pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_CONFIG") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ferry/config.toml")
}

/// Reads the file; a missing one is empty.
pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn save(path: &Path, file: &ConfigFile) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(file).context("writing the config")?;
    // Written whole and renamed: a reader never sees half a file.
    let staged = path.with_extension("toml.new");
    std::fs::write(&staged, text).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("writing {}", path.display()))
}

/// The settings of context `name` (else the current context, if any).
pub fn selected(path: &Path, name: Option<&str>) -> anyhow::Result<Connection> {
    let file = load(path)?;
    let Some(name) = name.or(file.current_context.as_deref()) else {
        return Ok(Connection::default());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    file.contexts
        .get(name)
        .cloned()
        .map(|context| context.anchored(dir))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no context '{name}' in {} (ferryctl config get-contexts lists them)",
                path.display()
            )
        })
}

/// `ferryctl config …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context.
    UseContext {
        /// Context name.
        name: String,
    },
    /// Create or update context NAME from the connection flags given with this
    /// command (--server, --tls-ca-file, --tls-cert-file, --tls-key-file,
    /// --tls-server-name, --token-file); the others it holds stay.
    SetContext {
        /// Context name.
        name: String,
    },
    /// Remove context NAME.
    DeleteContext {
        /// Context name.
        name: String,
    },
}

/// Runs a config subcommand; `given` holds the connection flags of this command line.
pub fn run(command: ConfigCommand, given: Connection, format: OutputFormat) -> anyhow::Result<()> {
    let path = path();
    let mut file = load(&path)?;
    match command {
        ConfigCommand::GetContexts => {
            let current = file.current_context.as_deref();
            match format {
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = file
                        .contexts
                        .iter()
                        .map(|(name, context)| {
                            vec![
                                if Some(name.as_str()) == current {
                                    "*"
                                } else {
                                    ""
                                }
                                .to_owned(),
                                name.clone(),
                                context.server.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print!("{}", output::table(&["CURRENT", "NAME", "SERVER"], &rows));
                }
                OutputFormat::Json => output::print_json(&json!({
                    "current_context": current,
                    "contexts": file.contexts,
                }))?,
            }
        }
        ConfigCommand::CurrentContext => match file.current_context {
            Some(name) => println!("{name}"),
            None => anyhow::bail!("no current context is set (ferryctl config use-context NAME)"),
        },
        ConfigCommand::UseContext { name } => {
            if !file.contexts.contains_key(&name) {
                anyhow::bail!("no context '{name}' in {}", path.display());
            }
            file.current_context = Some(name.clone());
            save(&path, &file)?;
            println!("switched to context '{name}'");
        }
        ConfigCommand::SetContext { name } => {
            // Files named on this command line are relative to where it runs.
            let here = std::env::current_dir().context("finding the current directory")?;
            let existing = file.contexts.remove(&name).unwrap_or_default();
            file.contexts
                .insert(name.clone(), given.anchored(&here).or(existing));
            if file.current_context.is_none() {
                file.current_context = Some(name.clone());
            }
            save(&path, &file)?;
            println!("context '{name}' set in {}", path.display());
        }
        ConfigCommand::DeleteContext { name } => {
            if file.contexts.remove(&name).is_none() {
                anyhow::bail!("no context '{name}' in {}", path.display());
            }
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            save(&path, &file)?;
            println!("deleted context '{name}'");
        }
    }
    Ok(())
}
