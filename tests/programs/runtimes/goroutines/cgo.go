//go:build cgo

package main

// #include <unistd.h>
// static void c_park(void) { for (;;) sleep(3600); }
import "C"

import "sync"

const withCgo = true

// cgoPark runs C code on its goroutine's thread (a system stack, not a goroutine stack).
//
//go:noinline
func cgoPark(wg *sync.WaitGroup) {
	wg.Done()
	C.c_park()
}
