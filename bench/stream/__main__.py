"""`python -m bench.stream` (the package's docstring says what it runs)."""

from bench.stream.run import main

if __name__ == "__main__":
    main()
