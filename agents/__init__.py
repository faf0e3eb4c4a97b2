"""Pipeline stages. Each agent is wiring: take a batch, call pure functions, hand results on."""
