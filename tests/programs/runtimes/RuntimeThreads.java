// A JVM target for the runtime tests: sleeping threads, one busy thread, one waiting on a
// monitor. Prints "READY <pid>" once they run, then for each line read on stdin runs a GC
// and an implicit null check (the JVM's own signals: safepoints, SIGSEGV handling) and
// prints "TICK <busy iterations> <null pointer exceptions caught>".
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

public class RuntimeThreads {
    static final AtomicLong spins = new AtomicLong();
    static volatile long sink;
    static Object nothing;

    static void sleeper(CountDownLatch up) {
        up.countDown();
        while (true) {
            try { Thread.sleep(3_600_000); } catch (InterruptedException e) { return; }
        }
    }

    static void busy(CountDownLatch up) {
        up.countDown();
        long x = 1;
        while (true) {
            for (int i = 0; i < 1_000_000; i++) x = x * 6364136223846793005L + 1442695040888963407L;
            sink = x;
            spins.incrementAndGet();
        }
    }

    static void waiter(Object lock, CountDownLatch up) {
        synchronized (lock) {
            up.countDown();
            try { lock.wait(); } catch (InterruptedException e) { return; }
        }
    }

    public static void main(String[] args) throws Exception {
        Object lock = new Object();
        CountDownLatch up = new CountDownLatch(5);
        for (int i = 0; i < 3; i++) start("sleeper-" + i, () -> sleeper(up));
        start("busy", () -> busy(up));
        start("waiter", () -> waiter(lock, up));
        up.await();
        Thread.sleep(300);
        System.out.println("READY " + ProcessHandle.current().pid());
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        long npes = 0;
        while (in.readLine() != null) {
            System.gc();
            try { nothing.hashCode(); } catch (NullPointerException e) { npes++; }
            System.out.println("TICK " + spins.get() + " " + npes);
            System.out.flush();
        }
    }

    static void start(String name, Runnable r) {
        Thread t = new Thread(r, name);
        t.setDaemon(true);
        t.start();
    }
}
