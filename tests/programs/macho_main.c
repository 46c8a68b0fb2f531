/* A tiny program for the Mach-O fixtures of tests/test_macho.py.
 *
 * It is only compiled and linked, never run: clang and ld64.lld build it for macOS and
 * watchOS targets on Linux without any Apple SDK, so it must not include a header or call a
 * library function (there is no libSystem to link against). The initialized global gives
 * the image a __DATA segment besides __TEXT and __LINKEDIT. Build it with -DVARIANT=N to get
 * an image with different code, hence a different LC_UUID.
 */

#ifndef VARIANT
#define VARIANT 1
#endif

int counter = 7;

int answer(int x) {
    counter += x + VARIANT;
    return counter * 6;
}

int main(void) {
    return answer(-VARIANT) == 42 ? 0 : 1;
}
