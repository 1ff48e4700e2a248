"""Sample data shipped by installed packages (nilearn, dipy): no network is used."""
