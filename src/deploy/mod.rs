//! Deployment edges: putting an issued certificate where a TLS server reads
//! it ([`files`], a Kubernetes Secret by server-side apply: [`kube`]),
//! and checking what a TLS endpoint actually serves ([`check`]). Their
//! settings (destinations, endpoint check timing) come from `config`.
//!
//! The writers and the check are leaves: they take plain values (PEM or
//! DER, a directory, an endpoint) and return a result to record. Nothing
//! here reads the store or the clock of the worker; the worker's deploy
//! loop decides when to deploy and what to do with a failed check. A
//! failed post-deploy command or a mismatching endpoint is a *result*, not
//! an `Err`.

pub mod check;
pub mod files;
pub mod kube;
pub mod package;
