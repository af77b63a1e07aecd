//! Which seccomp filter a task's container gets, settled by the shim before the spec reaches
//! the agent. The agent applies the spec's `linux.seccomp`, else Docker's default profile, and
//! no filter at all when the spec carries the annotation `org.rvm.seccomp=unconfined`
//! (`rvm_protocol::annotations::SECCOMP`, how `rvm run --security-opt seccomp=unconfined` says
//! it). Through containerd the spec's annotations are not only the runtime's: containerd's CRI
//! copies the pod's and container's annotations into it when its runtime configuration lists
//! them (`pod_annotations`, `container_annotations`), and `ctr run --annotation` sets any. So:
//! - every annotation under `org.rvm.` in a task's spec is removed (rvm's own, set by rvm
//!   only): no annotation can take away or weaken the filter the spec asks for;
//! - a spec with `linux.seccomp` gets that profile (CRI's `RuntimeDefault` and `Localhost`);
//! - a spec without one (CRI's `Unconfined`, also a privileged container, and `ctr run`
//!   without `--seccomp`) gets what the shim's configuration says, [`DEFAULT_ENV`]: Docker's
//!   default profile unless it says `unconfined`, in which case the shim itself sets the
//!   annotation for the agent.

use oci_spec::runtime::Spec;
use rvm_protocol::annotations::SECCOMP;
use thiserror::Error;

/// The environment variable (containerd's, which its shims inherit) that says what a container
/// whose spec has no `linux.seccomp` gets: `runtime-default` (the default) or `unconfined`.
pub const DEFAULT_ENV: &str = "RVM_SECCOMP_DEFAULT";

/// The prefix of rvm's own annotations, which only rvm sets.
const RVM_PREFIX: &str = "org.rvm.";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{DEFAULT_ENV}={0:?}: expected runtime-default or unconfined")]
pub struct ConfigError(String);

/// What a container whose spec has no `linux.seccomp` gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unprofiled {
    /// Docker's default profile (what kubelet's `--seccomp-default` asks for).
    #[default]
    RuntimeDefault,
    /// No filter (Kubernetes' own meaning of an absent profile, `Unconfined`).
    Unconfined,
}

impl Unprofiled {
    /// The shim's configuration, from [`DEFAULT_ENV`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::parse(std::env::var(DEFAULT_ENV).ok().as_deref())
    }

    /// The configuration `value` of [`DEFAULT_ENV`] says (unset or empty: the default).
    pub fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        match value {
            None | Some("" | "runtime-default") => Ok(Self::RuntimeDefault),
            Some("unconfined") => Ok(Self::Unconfined),
            Some(other) => Err(ConfigError(other.to_owned())),
        }
    }
}

/// The filter a container was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The spec's `linux.seccomp`.
    Spec,
    /// Docker's default profile, for a spec without one.
    RuntimeDefault,
    /// None, for a spec without one, as configured.
    Unconfined,
}

/// Settles the filter of the container of `spec` (see the module); returns it and the rvm
/// annotations that were removed.
pub fn settle(spec: &mut Spec, unprofiled: Unprofiled) -> (Filter, Vec<String>) {
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    let mut removed: Vec<String> = annotations
        .keys()
        .filter(|key| key.starts_with(RVM_PREFIX))
        .cloned()
        .collect();
    removed.sort();
    annotations.retain(|key, _| !key.starts_with(RVM_PREFIX));
    let has_profile = spec
        .linux()
        .as_ref()
        .is_some_and(|linux| linux.seccomp().is_some());
    let filter = match (has_profile, unprofiled) {
        (true, _) => Filter::Spec,
        (false, Unprofiled::RuntimeDefault) => Filter::RuntimeDefault,
        (false, Unprofiled::Unconfined) => {
            annotations.insert(SECCOMP.to_owned(), "unconfined".to_owned());
            Filter::Unconfined
        }
    };
    spec.set_annotations(Some(annotations));
    (filter, removed)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::runtime::{LinuxBuilder, LinuxSeccompAction, LinuxSeccompBuilder, SpecBuilder};

    use super::*;

    fn spec(annotations: &[(&str, &str)], profile: bool) -> Spec {
        let mut linux = LinuxBuilder::default();
        if profile {
            let seccomp = LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActErrno)
                .build()
                .unwrap();
            linux = linux.seccomp(seccomp);
        }
        let mut spec = SpecBuilder::default()
            .linux(linux.build().unwrap())
            .build()
            .unwrap();
        if !annotations.is_empty() {
            spec.set_annotations(Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ));
        }
        spec
    }

    fn annotation(spec: &Spec, key: &str) -> Option<String> {
        spec.annotations().as_ref()?.get(key).cloned()
    }

    #[test]
    fn the_configuration_is_runtime_default_unless_it_says_unconfined() {
        assert_eq!(Unprofiled::parse(None), Ok(Unprofiled::RuntimeDefault));
        assert_eq!(Unprofiled::parse(Some("")), Ok(Unprofiled::RuntimeDefault));
        assert_eq!(
            Unprofiled::parse(Some("runtime-default")),
            Ok(Unprofiled::RuntimeDefault)
        );
        assert_eq!(
            Unprofiled::parse(Some("unconfined")),
            Ok(Unprofiled::Unconfined)
        );
        let err = Unprofiled::parse(Some("Unconfined ")).unwrap_err();
        assert!(
            err.to_string().contains(DEFAULT_ENV) && err.to_string().contains("Unconfined "),
            "{err}"
        );
    }

    #[test]
    fn no_annotation_switches_off_the_profile_the_spec_asks_for() {
        for unprofiled in [Unprofiled::RuntimeDefault, Unprofiled::Unconfined] {
            let mut with_profile = spec(
                &[
                    (SECCOMP, "unconfined"),
                    ("io.kubernetes.cri.sandbox-id", "pod1"),
                ],
                true,
            );
            let (filter, removed) = settle(&mut with_profile, unprofiled);
            assert_eq!(filter, Filter::Spec);
            assert_eq!(removed, [SECCOMP]);
            assert_eq!(annotation(&with_profile, SECCOMP), None);
            assert_eq!(
                annotation(&with_profile, "io.kubernetes.cri.sandbox-id").as_deref(),
                Some("pod1"),
                "other annotations stay"
            );
            assert!(with_profile.linux().as_ref().unwrap().seccomp().is_some());
        }
    }

    #[test]
    fn no_annotation_switches_off_the_runtime_default() {
        let mut unprofiled = spec(
            &[(SECCOMP, "unconfined"), ("org.rvm.future-knob", "x")],
            false,
        );
        let (filter, removed) = settle(&mut unprofiled, Unprofiled::RuntimeDefault);
        assert_eq!(filter, Filter::RuntimeDefault);
        assert_eq!(removed, ["org.rvm.future-knob", SECCOMP]);
        assert_eq!(unprofiled.annotations().as_ref(), Some(&HashMap::new()));
    }

    #[test]
    fn a_spec_without_a_profile_gets_what_the_configuration_says() {
        let mut plain = spec(&[], false);
        assert_eq!(
            settle(&mut plain, Unprofiled::RuntimeDefault),
            (Filter::RuntimeDefault, Vec::new())
        );
        assert_eq!(annotation(&plain, SECCOMP), None);
        let (filter, removed) = settle(&mut plain, Unprofiled::Unconfined);
        assert_eq!((filter, removed.len()), (Filter::Unconfined, 0));
        assert_eq!(annotation(&plain, SECCOMP).as_deref(), Some("unconfined"));
    }
}
