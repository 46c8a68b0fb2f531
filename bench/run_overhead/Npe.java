// Npe N: N iterations, every other one a NullPointerException that HotSpot's compiled code
// detects with a SIGSEGV (implicit null check); prints how many were caught.
public class Npe {
    static Object[] objs = {null, "x"};

    public static void main(String[] args) {
        long n = Long.parseLong(args[0]);
        long caught = 0;
        for (long i = 0; i < n; i++) {
            try {
                objs[(int) (i & 1)].hashCode();
            } catch (NullPointerException e) {
                caught++;
            }
        }
        System.out.println(caught);
    }
}
