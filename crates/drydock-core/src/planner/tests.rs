//! Planner tests: scenarios, then properties over random fleets.
