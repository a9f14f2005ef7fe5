"""The planner agent: intake, reconciliation of ticket state, operator commands."""
