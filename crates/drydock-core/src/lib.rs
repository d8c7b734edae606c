//! drydock's domain, with no I/O: OS versions and pins, the rollout policy, maintenance
//! windows, the node protocol, the cluster snapshot and the planner.
//!
//! Everything here is a pure function of its inputs (the current time is an argument), so
//! the operator, `drydockctl plan` and the tests all run exactly the same decisions.
//!
//! Architecture: [`policy`] turns the ConfigMap into a validated [`policy::Policy`];
//! [`protocol`] turns a Node's labels and annotations into a typed
//! [`protocol::NodeState`]; [`snapshot`] indexes nodes, pods and budgets; [`planner`]
//! combines them into a [`planner::Plan`].

pub mod agent;
pub mod channel;
pub mod cincinnati;
pub mod download;
pub mod duration;
pub mod fleetlock;
#[cfg(feature = "k8s")]
pub mod k8s;
pub mod omaha;
pub mod pin;
pub mod planner;
pub mod policy;
pub mod protocol;
pub mod selector;
pub mod snapshot;
pub mod strmap;
pub mod transition;
pub mod version;
pub mod window;

pub use planner::{Plan, plan};
pub use policy::Policy;
pub use snapshot::Snapshot;
