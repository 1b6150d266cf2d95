"""``python -m trtbert`` (and ``accelerate launch -m trtbert train ...``)."""

from trtbert.cli import main

if __name__ == "__main__":
    main()
