# Technique: two threads held at once. Thread A opens a file the scope allows and thread B
# a file only the daemon's path check denies (`.env`, made after the daemon loaded), at the
# same moment, so that both opens are held for the daemon. A hold stops the whole process
# and a resume ends the stop for every thread: were the process resumed on A's verdict
# while B is still held, B's open would return before its own verdict, and B would read.
# Stopped (intended) because the daemon resumes a process only once no other thread of it
# is held; B's verdict kills it.
# ARGS: allowed file (made for this run), denied file
import threading

allowed, denied = ARGS
barrier = threading.Barrier(2)


def say(text):
    # One write per line: the two threads' lines must not interleave.
    os.write(1, (text + "\n").encode())


def opener(label, path):
    barrier.wait()
    attempt(label, lambda: read_file(path))


threads = [threading.Thread(target=opener, args=("allowed", allowed)),
           threading.Thread(target=opener, args=("denied", denied))]
for t in threads:
    t.start()
for t in threads:
    t.join()
