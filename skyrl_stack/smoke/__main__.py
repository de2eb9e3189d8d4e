from skyrl_stack.smoke.main import main

# Guarded: spawned worker processes (NCCL check) import the main module again.
if __name__ == "__main__":
    raise SystemExit(main())
