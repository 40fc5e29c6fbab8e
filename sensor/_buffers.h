/* Shared by the extensions whose functions are called once per one-second window (_walk.group, _flows.orient and
 * _flows.apply): their arguments are taken by METH_FASTCALL and their buffers here, not by PyArg_ParseTuple's "y*",
 * whose format walk cost more than grouping a window of control traffic (callgrind, docs/benchmarks.md, issue 16,
 * 1 December late afternoon). Both also key their hashes of wire-chosen keys with a per-process secret drawn here. */
#ifndef CAMWATCH_BUFFERS_H
#define CAMWATCH_BUFFERS_H

#include <Python.h>

/* args[0:n] as C-contiguous byte buffers, what "y*" takes. On failure none is held. */
static int buffers(PyObject *const *args, Py_ssize_t n, Py_buffer *in)
{
    for (Py_ssize_t j = 0; j < n; j++) {
        if (PyObject_GetBuffer(args[j], &in[j], PyBUF_SIMPLE) < 0) {
            while (j-- > 0)
                PyBuffer_Release(&in[j]);
            return -1;
        }
    }
    return 0;
}

/* n bytes of os.urandom into out, once per process at the module's load (who: the module, for the error). */
static int draw_secret(void *out, Py_ssize_t n, const char *who)
{
    PyObject *os = PyImport_ImportModule("os"), *raw = NULL;
    if (os != NULL)
        raw = PyObject_CallMethod(os, "urandom", "n", n);
    Py_XDECREF(os);
    if (raw == NULL)
        return -1;
    if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) != n) {
        Py_DECREF(raw);
        PyErr_Format(PyExc_RuntimeError, "%s: os.urandom gave no %zd bytes", who, n);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(raw), (size_t)n);
    Py_DECREF(raw);
    return 0;
}

#endif
