"""The stateful runtime: what Multihome keeps between calls (stored responses, conversations,
background jobs, agent runs, memory), in the organisation's store and sealed under its keys."""
