//! Support only these tests use: a stand-in Kubernetes API server and small
//! meshes written as manifests.

pub mod kube;
pub mod policy;
