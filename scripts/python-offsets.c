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
/* A field printed under its C name: FIELD("tstate", PyThreadState, next) is "tstate.next". */
#define FIELD(group, type, field) P(group "." #field, offsetof(type, field))
#define TSTATE(field) FIELD("tstate", PyThreadState, field)
#define IFRAME(field) FIELD("iframe", _PyInterpreterFrame, field)
#define FRAME(field) FIELD("frame", PyFrameObject, field)
#define CODE(field) FIELD("code", PyCodeObject, field)
int main(void) {
  printf("{\n");
  P("runtime.interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
#if PY_VERSION_HEX < 0x030C0000
  P("runtime.gil_locked", offsetof(_PyRuntimeState, ceval.gil.locked));
  P("runtime.gil_last_holder", offsetof(_PyRuntimeState, ceval.gil.last_holder));
  P("runtime.tstate_current", offsetof(_PyRuntimeState, gilstate.tstate_current));
#else
  P("interp.ceval_gil", offsetof(PyInterpreterState, ceval.gil));
  FIELD("gil", struct _gil_runtime_state, locked);
  FIELD("gil", struct _gil_runtime_state, last_holder);
#endif
  FIELD("interp", PyInterpreterState, next);
#if PY_VERSION_HEX >= 0x030B0000
  P("interp.threads_head", offsetof(PyInterpreterState, threads.head));
#else
  P("interp.threads_head", offsetof(PyInterpreterState, tstate_head));
#endif
  TSTATE(next); TSTATE(interp); TSTATE(thread_id);
#if PY_VERSION_HEX >= 0x030B0000
  TSTATE(native_thread_id);
#if PY_VERSION_HEX >= 0x030D0000
  TSTATE(current_frame);
  P("iframe.code", offsetof(_PyInterpreterFrame, f_executable));
  IFRAME(instr_ptr);
#else
  TSTATE(cframe); FIELD("cframe", _PyCFrame, current_frame);
  P("iframe.code", offsetof(_PyInterpreterFrame, f_code));
  IFRAME(prev_instr);
#endif
  IFRAME(previous); IFRAME(owner);
#if PY_VERSION_HEX < 0x030C0000
  IFRAME(is_entry);
#endif
  CODE(co_code_adaptive); CODE(co_qualname);
#else
  TSTATE(frame);
  FRAME(f_back); FRAME(f_code); FRAME(f_lasti); FRAME(f_lineno);
#endif
#if PY_VERSION_HEX >= 0x030A0000
  CODE(co_linetable);
#else
  CODE(co_lnotab);
#endif
  CODE(co_filename); CODE(co_name); CODE(co_firstlineno);
  FIELD("object", PyObject, ob_type);
  FIELD("type", PyTypeObject, tp_name);
  P("unicode.state", sizeof(PyObject) + 2*sizeof(Py_ssize_t));
  FIELD("unicode", PyASCIIObject, length);
  P("unicode.ascii_size", sizeof(PyASCIIObject));
  P("unicode.compact_size", sizeof(PyCompactUnicodeObject));
  FIELD("bytes", PyVarObject, ob_size);
  FIELD("bytes", PyBytesObject, ob_sval);
  printf("}\n");
  return 0;
}
