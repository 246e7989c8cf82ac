"""Training: one readable script per component, sharing common.py."""
