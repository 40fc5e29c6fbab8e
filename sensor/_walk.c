/*
 * The classic-pcap record walk, the one inherently sequential step of replay (each record's length says where
 * the next one starts). Same results as CaptureReader._walk_pcap_python, bit for bit; that function stays the
 * fallback when this extension cannot be built.
 *
 * walk(buffer, big_endian, scale, max_record) ->
 *     (used, need, bad_offset, bad_length, offsets, caplens, wirelens, stamps)
 * offsets/caplens/wirelens are bytes holding native int64, stamps native float64, one entry per complete record.
 * need: bytes the incomplete record at `used` requires (0 when the buffer ended on a boundary).
 * bad_offset: position of a record whose length exceeds max_record (its length in bad_length), else -1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t load32(const unsigned char *p, int big_endian)
{
    if (big_endian)
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | (uint32_t)p[0];
}

static PyObject *walk(PyObject *self, PyObject *args)
{
    Py_buffer view;
    int big_endian;
    double scale;
    unsigned long long max_record;
    if (!PyArg_ParseTuple(args, "y*pdK", &view, &big_endian, &scale, &max_record))
        return NULL;

    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    Py_ssize_t capacity = end / 16 + 1;
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, capacity * 8);
    PyObject *caplens = PyBytes_FromStringAndSize(NULL, capacity * 8);
    PyObject *wirelens = PyBytes_FromStringAndSize(NULL, capacity * 8);
    PyObject *stamps = PyBytes_FromStringAndSize(NULL, capacity * 8);
    if (!offsets || !caplens || !wirelens || !stamps) {
        Py_XDECREF(offsets); Py_XDECREF(caplens); Py_XDECREF(wirelens); Py_XDECREF(stamps);
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t *off = (int64_t *)PyBytes_AS_STRING(offsets);
    int64_t *cap = (int64_t *)PyBytes_AS_STRING(caplens);
    int64_t *wire = (int64_t *)PyBytes_AS_STRING(wirelens);
    double *ts = (double *)PyBytes_AS_STRING(stamps);

    Py_ssize_t pos = 0, n = 0, bad_offset = -1;
    long long need = 0, bad_length = 0;
    Py_BEGIN_ALLOW_THREADS
    while (pos + 16 <= end) {
        uint32_t sec = load32(data + pos, big_endian);
        uint32_t frac = load32(data + pos + 4, big_endian);
        uint32_t caplen = load32(data + pos + 8, big_endian);
        uint32_t wirelen = load32(data + pos + 12, big_endian);
        if (caplen > max_record) {
            bad_offset = pos;
            bad_length = caplen;
            break;
        }
        if (pos + 16 + (Py_ssize_t)caplen > end) {
            need = 16 + (long long)caplen;
            break;
        }
        off[n] = pos + 16;
        cap[n] = caplen;
        wire[n] = wirelen >= caplen ? wirelen : caplen;
        ts[n] = (double)sec + (double)frac * scale;
        n++;
        pos += 16 + caplen;
    }
    if (bad_offset < 0 && need == 0 && pos < end)
        need = 16;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);

    if (_PyBytes_Resize(&offsets, n * 8) || _PyBytes_Resize(&caplens, n * 8) ||
        _PyBytes_Resize(&wirelens, n * 8) || _PyBytes_Resize(&stamps, n * 8))
        return NULL;
    return Py_BuildValue("(nLnLNNNN)", pos, need, bad_offset, bad_length, offsets, caplens, wirelens, stamps);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "Walk classic-pcap records in a buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
