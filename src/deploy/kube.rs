//! Kubernetes Secret destination: a Secret of type `kubernetes.io/tls`
//! (`tls.crt` = full chain, `tls.key`, `ca.crt` = the intermediates),
//! created or updated with server-side apply (`PATCH … application/
//! apply-patch+yaml`, field manager `twincert`, `force=true` so twincert
//! owns the keys it writes), annotated with the slot, CA and serial.
//!
//! It speaks the Kubernetes API's REST paths directly with the crate's
//! HTTP client rather than through the `kube` crate: one request type, no
//! generated API types to compile on every build; credentials are the
//! pod's service account (in-cluster) or an explicit API server, token and
//! CA file (see [`super::settings::KubeTarget`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::settings::KubeTarget;

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

/// The apply request's URL.
pub fn apply_url(target: &KubeTarget, m: &SecretMaterial<'_>) -> String {
    format!(
        "{}/api/v1/namespaces/{}/secrets/{}?fieldManager={FIELD_MANAGER}&force=true",
        target.api_server.trim_end_matches('/'),
        target.namespace,
        secret_name(&target.secret_name, m.name)
    )
}

/// An HTTP client for one target's API server (its CA, when given).
pub fn client(target: &KubeTarget) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(pem) = &target.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("Kubernetes CA file: {e}"))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Applies the Secret; returns the resourceVersion the API server answered.
pub async fn apply(
    http: &reqwest::Client,
    target: &KubeTarget,
    m: &SecretMaterial<'_>,
) -> Result<Option<String>, String> {
    let body = secret_object(target, m).to_string();
    // A rotated service-account token is picked up on the next apply.
    let token = match &target.token_file {
        Some(f) => tokio::fs::read_to_string(f)
            .await
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| target.token.clone()),
        None => target.token.clone(),
    };
    let rsp = http
        .patch(apply_url(target, m))
        .bearer_auth(&token)
        .header("content-type", "application/apply-patch+yaml")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("Kubernetes API {}: {e}", target.api_server))?;
    let status = rsp.status();
    let text = rsp.text().await.unwrap_or_default();
    if !status.is_success() {
        // The API's Status message, never our request (it holds the key).
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(format!("Kubernetes API answered {status}: {msg}"));
    }
    Ok(serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> KubeTarget {
        KubeTarget {
            namespace: "web".into(),
            secret_name: "{name}-tls".into(),
            api_server: "https://k8s.example:6443/".into(),
            token: "t".into(),
            token_file: None,
            ca_pem: None,
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
        assert_eq!(
            apply_url(&target(), &m),
            "https://k8s.example:6443/api/v1/namespaces/web/secrets/\
             wildcard.shop.example.com-tls?fieldManager=twincert&force=true"
        );
    }
}
