"""minetrain: offline behaviour-cloning pre-training of Minecraft agents (ROCKET-1) with Lightning."""

__version__ = "0.1.0"
