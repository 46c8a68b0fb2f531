// A JVM target for tests/test_jit.py: threads whose Java loops the JIT compiles, parked in
// Thread.sleep, LockSupport.parkNanos and Object.wait, and busy ones. Prints "READY <pid>"
// once the loops have run hot for a while.
import java.util.concurrent.locks.LockSupport;

public class JitSpin {
    static volatile long sink;

    static long work(long n) {
        long acc = 0;
        for (long i = 0; i < n; i++) {
            acc += (i * 31) ^ (acc >>> 3);
        }
        return acc;
    }

    static void sleeper(int id) throws InterruptedException {
        while (true) {
            sink += work(20000 + id);
            Thread.sleep(5);
        }
    }

    static void parker(int id) {
        while (true) {
            sink += work(20000 + id);
            LockSupport.parkNanos(3_000_000L);
        }
    }

    static void spinner(int id) {
        while (true) {
            sink += work(1_000_000 + id);
        }
    }

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 2;
        for (int i = 0; i < n; i++) {
            final int id = i;
            Thread a = new Thread(() -> {
                try { sleeper(id); } catch (InterruptedException e) { }
            }, "sleeper-" + i);
            Thread b = new Thread(() -> parker(id), "parker-" + i);
            Thread c = new Thread(() -> spinner(id), "spinner-" + i);
            for (Thread t : new Thread[] {a, b, c}) {
                t.setDaemon(true);
                t.start();
            }
        }
        Thread.sleep(2000);  // long enough for C1 and C2 to compile the loops
        System.out.println("READY " + ProcessHandle.current().pid());
        System.out.flush();
        Object lock = new Object();
        synchronized (lock) {
            lock.wait();
        }
    }
}
