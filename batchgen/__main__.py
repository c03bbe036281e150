from .cli import main

if __name__ == "__main__":  # the guard keeps spawned worker processes from rerunning the CLI
    raise SystemExit(main())
