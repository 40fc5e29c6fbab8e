/*
 * The manuf index's line scan (sensor/enrich/manuf_index.py, _locate), compiled: one pass over Wireshark's manuf
 * file at every start. numpy's version of it (_locate_numpy, the reference) takes ~11 ms over the ~52,000 lines,
 * two dozen whole-file and whole-column operations each with its temporaries; this one reads each line's first 21
 * bytes once (issue 16, start-up).
 *
 * locate(data) -> ((starts, ends, bits, keys), odd): the four columns of the assignment lines in the canonical
 * shape (start, end, prefix length, prefix value) and the (start, end) pairs of the lines that are neither in that
 * shape nor a comment, each a bytes object of native int64, in file order. Lines end at \n; an empty line is skipped. The shapes are _locate_numpy's: `00:1B:C5` then a tab,
 * or `00:1B:C5:00:00:00/NN` then a tab with NN one of the lengths looked up (24, 28, 36), hex digits of either case.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { SKIP, FAST, ODD };

static const int DIGITS[12] = {0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16};   /* the long shape's digit columns */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A line's kind; for FAST its prefix length and value. Reads only p[0 .. len - 1]. */
static int classify(const unsigned char *p, Py_ssize_t len, int64_t *bits, int64_t *key)
{
    uint64_t value = 0;
    int count = 0, length = 0;
    if (len > 8 && p[8] == '\t' && p[2] == ':' && p[5] == ':') {
        count = 6;
        length = 24;
    }
    else if (len > 20 && p[20] == '\t' && p[2] == ':' && p[5] == ':' && p[8] == ':' && p[11] == ':'
             && p[14] == ':' && p[17] == '/' && p[18] >= '0' && p[18] <= '9' && p[19] >= '0' && p[19] <= '9') {
        length = (p[18] - '0') * 10 + (p[19] - '0');
        if (length == 24 || length == 28 || length == 36)
            count = 12;
    }
    for (int i = 0; i < count; i++) {
        int d = hexval(p[DIGITS[i]]);
        if (d < 0) {
            count = 0;
            break;
        }
        value = (value << 4) | (uint64_t)d;
    }
    if (count == 0)
        return p[0] == '#' ? SKIP : ODD;
    *bits = length;
    *key = (int64_t)((value << (4 * (12 - count))) >> (48 - length));
    return FAST;
}

/* The columns of the canonical lines, each a bytes object of int64 sized for the most lines the data can hold
 * and cut to the lines found: a canonical line takes at least 10 bytes with its newline. */
enum { START, END, BITS, KEY, NCOLUMNS };

static PyObject *locate(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len, cap = size / 10 + 1, nfast = 0, nodd = 0, odd_cap = 0;
    PyObject *columns[NCOLUMNS] = {NULL};
    int64_t *column[NCOLUMNS];
    int64_t *odd = NULL;   /* (start, end) pairs: rare (none in Wireshark's file), grown as found */
    PyObject *result = NULL;
    for (int c = 0; c < NCOLUMNS; c++) {
        columns[c] = PyBytes_FromStringAndSize(NULL, cap * (Py_ssize_t)sizeof(int64_t));
        if (columns[c] == NULL)
            goto done;
        column[c] = (int64_t *)PyBytes_AS_STRING(columns[c]);
    }
    for (Py_ssize_t start = 0; start <= size;) {
        const unsigned char *nl = memchr(data + start, '\n', (size_t)(size - start));
        Py_ssize_t end = nl ? nl - data : size;
        if (end > start) {
            int64_t bits = 0, key = 0;
            int kind = classify(data + start, end - start, &bits, &key);
            if (kind == FAST && nfast < cap) {   /* always below cap; checked all the same */
                column[START][nfast] = start;
                column[END][nfast] = end;
                column[BITS][nfast] = bits;
                column[KEY][nfast] = key;
                nfast++;
            }
            else if (kind == ODD) {
                if (nodd == odd_cap) {
                    odd_cap = odd_cap ? 2 * odd_cap : 64;
                    int64_t *grown = PyMem_Realloc(odd, (size_t)odd_cap * 2 * sizeof(int64_t));
                    if (grown == NULL) {
                        PyErr_NoMemory();
                        goto done;
                    }
                    odd = grown;
                }
                odd[2 * nodd] = start;
                odd[2 * nodd + 1] = end;
                nodd++;
            }
        }
        start = end + 1;
    }
    for (int c = 0; c < NCOLUMNS; c++)
        if (_PyBytes_Resize(&columns[c], nfast * (Py_ssize_t)sizeof(int64_t)) < 0)
            goto done;   /* columns[c] is NULL then */
    PyObject *spans = PyBytes_FromStringAndSize((const char *)odd, nodd * 2 * (Py_ssize_t)sizeof(int64_t));
    if (spans != NULL) {
        result = Py_BuildValue("(OOOO)N", columns[START], columns[END], columns[BITS], columns[KEY], spans);
    }
done:
    for (int c = 0; c < NCOLUMNS; c++)
        Py_XDECREF(columns[c]);
    PyMem_Free(odd);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"locate", locate, METH_O,
     "locate(data) -> ((starts, ends, bits, keys), odd): the canonical assignment lines' columns and the other "
     "lines' (start, end) pairs that are not comments, as native int64, in file order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_manuf", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__manuf(void)
{
    return PyModule_Create(&module);
}
