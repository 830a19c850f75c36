//! Kubernetes Secret destination: a Secret of type `kubernetes.io/tls`
//! (`tls.crt` = full chain, `tls.key`, `ca.crt` = the intermediates),
//! created or updated with server-side apply through the `kube` crate
//! (field manager `twincert`, `force` so twincert owns the keys it
//! writes), annotated with the slot, CA and serial. Credentials: the pod's
//! service account (in-cluster), a kubeconfig file, or an explicit API
//! server with a token file and CA file; `kube` re-reads token files, so
//! rotated service-account tokens keep working.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::config::{KubeSource, KubeTarget};

/// Field manager named in every apply.
pub const FIELD_MANAGER: &str = "twincert";

/// What goes into one Secret.
#[derive(Clone)]
pub struct SecretMaterial<'a> {
    pub name: &'a str,
    pub slot: &'a str,
    pub ca_id: &'a str,
    pub serial: &'a str,
    /// Leaf then intermediates.
    pub fullchain_pem: &'a str,
    /// Intermediates only.
    pub chain_pem: &'a str,
    /// Secret.
    pub key_pem: &'a str,
}

/// The Secret's name for a managed name: `{name}` in the template becomes
/// the name with `*` as `wildcard` and every character outside
/// `[a-z0-9.-]` as `-` (a DNS subdomain, as Kubernetes requires).
pub fn secret_name(template: &str, name: &str) -> String {
    let safe: String = name
        .to_ascii_lowercase()
        .replace('*', "wildcard")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let out = template.replace("{name}", &safe);
    out.chars().take(253).collect()
}

/// The Secret object applied.
pub fn secret_object(target: &KubeTarget, m: &SecretMaterial<'_>) -> Value {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": secret_name(&target.secret_name, m.name),
            "namespace": target.namespace,
            "labels": { "app.kubernetes.io/managed-by": "twincert" },
            "annotations": {
                "twincert.io/name": m.name,
                "twincert.io/slot": m.slot,
                "twincert.io/ca": m.ca_id,
                "twincert.io/serial": m.serial,
            },
        },
        "data": {
            "tls.crt": b64(m.fullchain_pem),
            "tls.key": b64(m.key_pem),
            "ca.crt": b64(m.chain_pem),
        },
    })
}

/// A client for one target's API server.
pub async fn client(target: &KubeTarget) -> Result<kube::Client, String> {
    let cfg = match &target.source {
        KubeSource::InCluster => kube::Config::incluster()
            .map_err(|e| format!("in-cluster Kubernetes credentials: {e}"))?,
        KubeSource::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        KubeSource::Explicit {
            api_server,
            token_file,
            ca_pem,
        } => {
            let uri: http::Uri = api_server
                .parse()
                .map_err(|e| format!("api_server '{api_server}': {e}"))?;
            let mut c = kube::Config::new(uri);
            if let Some(f) = token_file {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("token file {}: {e}", f.display()))?;
                if text.trim() == text {
                    // Read again by the client as it changes (rotation).
                    c.auth_info.token_file = Some(f.display().to_string());
                } else {
                    // A hand-written file ending in a newline: the
                    // client would send the newline; use it trimmed.
                    c.auth_info.token = Some(text.trim().to_string().into());
                }
            }
            if let Some(pem) = ca_pem {
                let ders = crate::certs::chain_ders(pem)
                    .map_err(|e| format!("Kubernetes CA file: {e}"))?;
                c.root_cert = Some(ders);
            }
            c
        }
    };
    kube::Client::try_from(cfg).map_err(|e| format!("Kubernetes client: {e}"))
}

/// Applies the Secret; returns the resourceVersion the API server answered.
pub async fn apply(
    client: &kube::Client,
    target: &KubeTarget,
    m: &SecretMaterial<'_>,
) -> Result<Option<String>, String> {
    let secret: Secret = serde_json::from_value(secret_object(target, m))
        .map_err(|e| format!("building the Secret: {e}"))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = secret_name(&target.secret_name, m.name);
    // kube's error carries the API's Status message, never our request.
    let applied = api
        .patch(&name, &params, &Patch::Apply(&secret))
        .await
        .map_err(|e| {
            format!(
                "Kubernetes API: applying Secret {}/{name}: {e}",
                target.namespace
            )
        })?;
    Ok(applied.metadata.resource_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> KubeTarget {
        KubeTarget {
            namespace: "web".into(),
            secret_name: "{name}-tls".into(),
            source: KubeSource::InCluster,
        }
    }

    #[test]
    fn secret_has_tls_type_keys_and_annotations() {
        let m = SecretMaterial {
            name: "*.Shop.example.com",
            slot: "backup",
            ca_id: "pebble-b",
            serial: "0a1b",
            fullchain_pem: "LEAF\nINTER\n",
            chain_pem: "INTER\n",
            key_pem: "KEY\n",
        };
        let o = secret_object(&target(), &m);
        assert_eq!(o["type"], "kubernetes.io/tls");
        assert_eq!(o["metadata"]["name"], "wildcard.shop.example.com-tls");
        assert_eq!(o["metadata"]["namespace"], "web");
        assert_eq!(o["metadata"]["annotations"]["twincert.io/slot"], "backup");
        assert_eq!(o["metadata"]["annotations"]["twincert.io/ca"], "pebble-b");
        assert_eq!(o["metadata"]["annotations"]["twincert.io/serial"], "0a1b");
        let dec = |k: &str| {
            String::from_utf8(
                STANDARD
                    .decode(o["data"][k].as_str().expect(k))
                    .expect("b64"),
            )
            .expect("utf8")
        };
        assert_eq!(dec("tls.crt"), "LEAF\nINTER\n");
        assert_eq!(dec("tls.key"), "KEY\n");
        assert_eq!(dec("ca.crt"), "INTER\n");
    }
}
