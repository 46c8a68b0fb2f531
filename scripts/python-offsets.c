/* Print the CPython structure offsets that generate_dump/python/offsets.py tables hold.
 * Build against an installed CPython (3.9-3.13):
 *   gcc -I$PREFIX/include/python3.X scripts/python-offsets.c -o /tmp/off && /tmp/off
 * (names: see offsets.py; iframe.prev_instr/instr_ptr is "iframe.instr" there). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_pystate.h"
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#include "internal/pycore_code.h"
#else
#include "frameobject.h"
#endif
#if PY_VERSION_HEX < 0x030C0000
#include "internal/pycore_gil.h"
#endif
#define P(name, expr) printf("    \"%s\": %zu,\n", name, (size_t)(expr))
int main(void) {
  printf("{\n");
  P("runtime.interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
#if PY_VERSION_HEX < 0x030C0000
  P("runtime.gil_locked", offsetof(_PyRuntimeState, ceval.gil.locked));
  P("runtime.gil_last_holder", offsetof(_PyRuntimeState, ceval.gil.last_holder));
  P("runtime.tstate_current", offsetof(_PyRuntimeState, gilstate.tstate_current));
#else
  P("interp.ceval_gil", offsetof(PyInterpreterState, ceval.gil));
  P("gil.locked", offsetof(struct _gil_runtime_state, locked));
  P("gil.last_holder", offsetof(struct _gil_runtime_state, last_holder));
#endif
  P("interp.next", offsetof(PyInterpreterState, next));
#if PY_VERSION_HEX >= 0x030B0000
  P("interp.threads_head", offsetof(PyInterpreterState, threads.head));
#else
  P("interp.threads_head", offsetof(PyInterpreterState, tstate_head));
#endif
  P("tstate.next", offsetof(PyThreadState, next));
  P("tstate.interp", offsetof(PyThreadState, interp));
  P("tstate.thread_id", offsetof(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030B0000
  P("tstate.native_thread_id", offsetof(PyThreadState, native_thread_id));
#if PY_VERSION_HEX >= 0x030D0000
  P("tstate.current_frame", offsetof(PyThreadState, current_frame));
  P("iframe.code", offsetof(_PyInterpreterFrame, f_executable));
  P("iframe.instr_ptr", offsetof(_PyInterpreterFrame, instr_ptr));
#else
  P("tstate.cframe", offsetof(PyThreadState, cframe));
  P("cframe.current_frame", offsetof(_PyCFrame, current_frame));
  P("iframe.code", offsetof(_PyInterpreterFrame, f_code));
  P("iframe.prev_instr", offsetof(_PyInterpreterFrame, prev_instr));
#endif
  P("iframe.previous", offsetof(_PyInterpreterFrame, previous));
  P("iframe.owner", offsetof(_PyInterpreterFrame, owner));
#if PY_VERSION_HEX < 0x030C0000
  P("iframe.is_entry", offsetof(_PyInterpreterFrame, is_entry));
#endif
  P("code.co_code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
  P("code.co_qualname", offsetof(PyCodeObject, co_qualname));
  P("code.co_linetable", offsetof(PyCodeObject, co_linetable));
#else
  P("tstate.frame", offsetof(PyThreadState, frame));
  P("frame.f_back", offsetof(PyFrameObject, f_back));
  P("frame.f_code", offsetof(PyFrameObject, f_code));
  P("frame.f_lasti", offsetof(PyFrameObject, f_lasti));
  P("frame.f_lineno", offsetof(PyFrameObject, f_lineno));
#if PY_VERSION_HEX >= 0x030A0000
  P("code.co_linetable", offsetof(PyCodeObject, co_linetable));
#else
  P("code.co_lnotab", offsetof(PyCodeObject, co_lnotab));
#endif
#endif
  P("code.co_filename", offsetof(PyCodeObject, co_filename));
  P("code.co_name", offsetof(PyCodeObject, co_name));
  P("code.co_firstlineno", offsetof(PyCodeObject, co_firstlineno));
  P("object.ob_type", offsetof(PyObject, ob_type));
  P("type.tp_name", offsetof(PyTypeObject, tp_name));
  P("unicode.state", sizeof(PyObject) + 2*sizeof(Py_ssize_t));
  P("unicode.length", offsetof(PyASCIIObject, length));
  P("unicode.ascii_size", sizeof(PyASCIIObject));
  P("unicode.compact_size", sizeof(PyCompactUnicodeObject));
  P("bytes.ob_size", offsetof(PyVarObject, ob_size));
  P("bytes.ob_sval", offsetof(PyBytesObject, ob_sval));
  printf("}\n");
  return 0;
}
