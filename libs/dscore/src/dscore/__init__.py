"""dscore: consensus and consistency protocols as deterministic state machines, with a simulator."""
