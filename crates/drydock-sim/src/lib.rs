//! Faithful doubles of the host services drydock cannot run here — update_engine,
//! rpm-ostree, logind — on a real D-Bus, following the upstream interface files in
//! `upstream/`; and [`bus::PrivateBus`], a real `dbus-daemon` per test.

pub mod bus;
pub mod cincinnati;
pub mod host;
pub mod logind;
pub mod omaha;
pub mod rpm_ostree;
pub mod update_engine;
