"""Print the loop's inference overhead on the world backbone (same as `promptloop bench overhead --json`)."""

import json

from promptloop.eval.overhead import overhead

if __name__ == "__main__":
    print(json.dumps(overhead(), indent=2))
