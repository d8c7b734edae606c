//! drydock's view of the host: typed D-Bus clients for the services that stage and apply
//! OS updates (update_engine on Flatcar, rpm-ostree on Fedora/RHEL CoreOS), each with its own error enum and a small fixed
//! set of error kinds for metrics, and the retry policy they share.

pub mod backoff;
pub mod facts;
pub mod logind;
mod owner;
pub mod rpm_ostree;
pub mod update_engine;
