"""python -m genomelm"""

from genomelm.cli import main

if __name__ == "__main__":
    main()
