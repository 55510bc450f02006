//! `agent-monitor crd --render FILE`: the manifest the daemon reads from each object of
//! `kubectl get agentscope NAME -o yaml` (or `-o json`, or a List), so that the line and
//! column of an `Invalid` condition can be found, and `agent-monitor check` run on it.

use std::io::{self, Read as _};
use std::path::Path;

use serde_json::Value;

use super::render;
use crate::scope::ResourceRef;

#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Yaml {
        path: std::path::PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{}: a {kind:?} is not an AgentScope or ClusterAgentScope", path.display())]
    NotAScope {
        path: std::path::PathBuf,
        kind: String,
    },
}

/// The rendered manifests of every object in `path` (`-`: standard input), separated by
/// `---` (positions count from the start of each document).
pub(crate) fn render_file(path: &Path) -> Result<String, RenderError> {
    let read = |source| RenderError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    if path == Path::new("-") {
        io::stdin().read_to_string(&mut text).map_err(read)?;
    } else {
        text = std::fs::read_to_string(path).map_err(read)?;
    }
    let documents: Vec<Value> =
        serde_saphyr::from_multiple_with_options(&text, crate::scope::yaml_options()).map_err(
            |source| RenderError::Yaml {
                path: path.to_owned(),
                source: Box::new(source),
            },
        )?;
    let mut objects = Vec::new();
    for document in documents {
        match document["items"].as_array() {
            Some(items) => objects.extend(items.iter().cloned()),
            None if document.is_null() => {}
            None => objects.push(document),
        }
    }
    let mut out = Vec::new();
    for object in objects {
        let metadata = &object["metadata"];
        let name = metadata["name"].as_str().unwrap_or_default().to_owned();
        let namespace = match object["kind"].as_str() {
            Some("AgentScope") => Some(
                metadata["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
            ),
            Some("ClusterAgentScope") => None,
            other => {
                return Err(RenderError::NotAScope {
                    path: path.to_owned(),
                    kind: other.unwrap_or_default().to_owned(),
                });
            }
        };
        out.push(render(&ResourceRef { namespace, name }, &object["spec"]));
    }
    Ok(out.join("---\n"))
}
