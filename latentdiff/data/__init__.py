"""Offline datasets: the procedural shapes world (more to come: emoji, Fashion-MNIST, MNIST)."""
