"""Start and join N Python threads, one at a time."""
import sys
import threading

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
for _ in range(n):
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
print(n)
