"""Simulators of KMS wire APIs that no local server exists for (Azure Key Vault), for the crypto tests."""
