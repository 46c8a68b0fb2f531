//go:build !cgo

package main

import "sync"

const withCgo = false

//go:noinline
func cgoPark(wg *sync.WaitGroup) {
	wg.Done()
	select {}
}
