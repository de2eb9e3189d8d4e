"""The smoke suite that ships inside the image (python -m skyrl_stack.smoke)."""
