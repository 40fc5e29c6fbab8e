/* Read-only file mappings that survive their file being truncated (or failing) under them.

   A byte of a shared file mapping past the file's current end, or on a page the disk cannot deliver, raises SIGBUS
   when it is touched, and SIGBUS's default action ends the process: no error line, and the outputs of what was
   already processed unwritten. Mappings made here are registered in a fixed table; a SIGBUS handler (installed,
   chained to the one it replaces, when the first mapping is made) that finds the faulting address inside one of
   them maps anonymous zero pages over the rest of that mapping, from the faulting page on (mmap with MAP_FIXED is a
   plain system call, safe in a signal handler on Linux), and records where the zeros begin. The faulting read is
   restarted and reads a zero; the Python reader asks `damaged` after each chunk and ends with camwatch's one-line
   error (sensor/mapped.py). A fault anywhere else, or a SIGBUS sent by a process, goes to the handler that was
   there before (Python's faulthandler, say) or to the default action, as if this module did not exist.

   Linux only (MAP_FIXED over a live mapping, si_addr); optional like the other extensions: without it capture
   files are read with readinto. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Mappings alive at once: one per capture file being read (the CLI reads one at a time). A full table makes
   `map` fail, and the caller reads that file with readinto instead. */
#define SLOTS 64
#define MADV_POPULATE_READ_VALUE 22   /* Linux 5.14; older kernels: EINVAL, which advise ignores */

struct slot {
    uintptr_t start, end;   /* page-aligned, [start, end) */
    uintptr_t zero_from;    /* the first page replaced by zeros, UINTPTR_MAX while none */
    int live;               /* written last on registration (release), first on removal */
};

static struct slot slots[SLOTS];
static struct sigaction previous;   /* the SIGBUS action ours replaced, for faults that are not ours */
static uintptr_t page_mask;

static void
chain(int sig, siginfo_t *info, void *context)
{
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction != NULL) {
            previous.sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* The default action: for a fault, returning restarts the faulting instruction and the kernel delivers
       SIGBUS again, now with nothing to catch it (an ignored SIGBUS from a fault is fatal anyway); a SIGBUS sent
       by a process is sent again. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
    if (info == NULL || info->si_code <= 0)
        raise(SIGBUS);
}

/* Anonymous zero pages over [page, page + length): the system call itself where it takes its six arguments
   plainly (64-bit Linux; i386's SYS_mmap takes a struct), libc's thin wrapper of it elsewhere. */
static int
zero_pages(uintptr_t page, uintptr_t length)
{
#if defined(SYS_mmap) && UINTPTR_MAX == 0xffffffffffffffffu
    long got = syscall(SYS_mmap, (void *)page, (size_t)length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                       -1, 0L);
    return got == (long)page ? 0 : -1;
#else
    void *got = mmap((void *)page, (size_t)length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    return got == (void *)page ? 0 : -1;
#endif
}

static void
on_sigbus(int sig, siginfo_t *info, void *context)
{
    int saved = errno;
    if (info != NULL && info->si_code > 0) {   /* a fault, not a signal sent by kill() or raise() */
        uintptr_t addr = (uintptr_t)info->si_addr;
        for (int i = 0; i < SLOTS; i++) {
            if (!__atomic_load_n(&slots[i].live, __ATOMIC_ACQUIRE))
                continue;
            uintptr_t start = slots[i].start, end = slots[i].end;
            if (addr < start || addr >= end)
                continue;
            uintptr_t page = addr & page_mask;
            if (zero_pages(page, end - page) != 0)
                break;   /* could not: the fault stays fatal */
            uintptr_t seen = __atomic_load_n(&slots[i].zero_from, __ATOMIC_RELAXED);
            while (page < seen && !__atomic_compare_exchange_n(&slots[i].zero_from, &seen, page, 0,
                                                               __ATOMIC_RELEASE, __ATOMIC_RELAXED))
                ;
            errno = saved;
            return;
        }
    }
    errno = saved;
    chain(sig, info, context);
}

/* Installed once, over whatever was there. If another handler has replaced ours since (faulthandler.enable()
   after the first mapping, say), no more mappings are made: that handler would see our faults first (and may
   chain back to ours, so installing ours again over it could make a loop); the caller reads with readinto. */
static int installed;

static int
install(void)
{
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) != 0)
        return -1;
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigbus)
        return 0;
    if (installed) {
        errno = EBUSY;
        return -1;
    }
    installed = 1;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_sigbus;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&ours.sa_mask);
    previous = current;
    return sigaction(SIGBUS, &ours, NULL);
}

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t size;      /* the file's bytes mapped */
    size_t length;        /* size rounded up to pages: what is unmapped */
    int slot;             /* -1 once unmapped */
    Py_ssize_t exports;   /* buffers handed out and not released */
} Mapping;

static void
unmap(Mapping *self)
{
    if (self->slot < 0)
        return;
    /* Out of the table before the pages go: no later fault at this address is taken for ours. */
    __atomic_store_n(&slots[self->slot].live, 0, __ATOMIC_RELEASE);
    munmap(self->data, self->length);
    self->slot = -1;
    self->data = NULL;
}

static void
Mapping_dealloc(Mapping *self)
{
    unmap(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Mapping_getbuffer(Mapping *self, Py_buffer *view, int flags)
{
    if (self->slot < 0) {
        PyErr_SetString(PyExc_ValueError, "mapping closed");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, 1, flags) < 0) {
        view->obj = NULL;   /* a writable buffer was asked for */
        return -1;
    }
    self->exports++;
    return 0;
}

static void
Mapping_releasebuffer(Mapping *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyBufferProcs Mapping_as_buffer = {
    (getbufferproc)Mapping_getbuffer,
    (releasebufferproc)Mapping_releasebuffer,
};

static PyObject *
Mapping_close(Mapping *self, PyObject *Py_UNUSED(ignored))
{
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "mapping still has buffers handed out");
        return NULL;
    }
    unmap(self);
    Py_RETURN_NONE;
}

/* advise(advice, start, length): madvise over [start, start + length) of the mapping, clipped to it. The GIL is
   released for MADV_POPULATE_READ, which faults the pages in and takes as long as a read, and for MADV_DONTNEED:
   dropping a walked chunk's pages (unmapping them, a TLB flush on every CPU the process runs on) takes ~0.1-0.3 ms,
   which sensor.overlap's thread spent holding the GIL while the pipeline waited for it on the main thread (the
   whole replay of vlan100 ~11-17 ms faster without; docs/benchmarks.md, issue 16, night). Asking for read-ahead
   (MADV_WILLNEED) takes microseconds, less than getting the GIL back may cost while the other thread is busy in
   Python, and keeps it (measured no faster without). Errors are ignored: advice changes no byte read, and a page
   that cannot be read is the handler's to deal with when it is touched. */
static PyObject *
Mapping_advise(Mapping *self, PyObject *args)
{
    int advice;
    Py_ssize_t start, length;
    if (!PyArg_ParseTuple(args, "inn:advise", &advice, &start, &length))
        return NULL;
    if (self->slot < 0 || start < 0 || length <= 0 || start >= self->size)
        Py_RETURN_NONE;
    if (length > self->size - start)
        length = self->size - start;
    uintptr_t from = ((uintptr_t)self->data + (uintptr_t)start) & page_mask;
    size_t span = (uintptr_t)self->data + (uintptr_t)(start + length) - from;
    if (advice != MADV_POPULATE_READ_VALUE && advice != MADV_DONTNEED) {
        (void)madvise((void *)from, span, advice);
        Py_RETURN_NONE;
    }
    /* The pages stay mapped while the GIL is released: unmapping needs it (close and dealloc hold it). */
    self->exports++;
    Py_BEGIN_ALLOW_THREADS
    (void)madvise((void *)from, span, advice);
    Py_END_ALLOW_THREADS
    self->exports--;
    Py_RETURN_NONE;
}

/* damaged(): the offset from which the mapping reads zeros because a fault was caught there (a page past the
   file's end or one the disk could not read), or -1. */
static PyObject *
Mapping_damaged(Mapping *self, PyObject *Py_UNUSED(ignored))
{
    if (self->slot < 0)
        return PyLong_FromLong(-1);
    uintptr_t zero = __atomic_load_n(&slots[self->slot].zero_from, __ATOMIC_ACQUIRE);
    if (zero == UINTPTR_MAX)
        return PyLong_FromLong(-1);
    return PyLong_FromSsize_t((Py_ssize_t)(zero - (uintptr_t)self->data));
}

static PyObject *
Mapping_len_size(Mapping *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyMethodDef Mapping_methods[] = {
    {"close", (PyCFunction)Mapping_close, METH_NOARGS, "Unmap; BufferError while a buffer of it is out."},
    {"advise", (PyCFunction)Mapping_advise, METH_VARARGS, "madvise(advice) over [start, start + length)."},
    {"damaged", (PyCFunction)Mapping_damaged, METH_NOARGS, "Where zeros replace the file's pages, or -1."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Mapping_getset[] = {
    {"size", (getter)Mapping_len_size, NULL, "bytes mapped", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sensor._mapguard.Mapping",
    .tp_basicsize = sizeof(Mapping),
    .tp_dealloc = (destructor)Mapping_dealloc,
    .tp_as_buffer = &Mapping_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A read-only shared mapping of a file whose SIGBUS faults read as zeros (see damaged()).",
    .tp_methods = Mapping_methods,
    .tp_getset = Mapping_getset,
};

/* map_file(fd, size): the first `size` bytes of the open file `fd`, mapped read-only and guarded. OSError when it
   cannot be mapped or the table is full. */
static PyObject *
guard_map(PyObject *module, PyObject *args)
{
    (void)module;
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "in:map_file", &fd, &size))
        return NULL;
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "cannot map an empty file");
        return NULL;
    }
    int slot = -1;
    for (int i = 0; i < SLOTS && slot < 0; i++)
        if (!__atomic_load_n(&slots[i].live, __ATOMIC_ACQUIRE))
            slot = i;
    if (slot < 0) {
        errno = EMFILE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (install() != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    size_t length = ((size_t)size + ~page_mask) & page_mask;
    void *data = mmap(NULL, length, PROT_READ, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    Mapping *self = PyObject_New(Mapping, &MappingType);
    if (self == NULL) {
        munmap(data, length);
        return NULL;
    }
    self->data = data;
    self->size = size;
    self->length = length;
    self->exports = 0;
    self->slot = slot;
    slots[slot].start = (uintptr_t)data;
    slots[slot].end = (uintptr_t)data + length;
    __atomic_store_n(&slots[slot].zero_from, UINTPTR_MAX, __ATOMIC_RELAXED);
    __atomic_store_n(&slots[slot].live, 1, __ATOMIC_RELEASE);
    return (PyObject *)self;
}

/* file_size(fd): fstat's st_size, OSError on failure. The reader asks at every chunk whether its mapped file was cut
   (sensor/mapped.py); unlike os.fstat this keeps the GIL for the microsecond the call takes, for the same reason as
   advise. */
static PyObject *
guard_file_size(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    struct stat st;
    if (!PyArg_ParseTuple(args, "i:file_size", &fd))
        return NULL;
    if (fstat(fd, &st) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong((long long)st.st_size);
}

static PyMethodDef guard_methods[] = {
    {"map_file", guard_map, METH_VARARGS, "A guarded read-only mapping of the first size bytes of fd."},
    {"file_size", guard_file_size, METH_VARARGS, "fstat(fd).st_size, the GIL kept."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef guard_module = {
    PyModuleDef_HEAD_INIT, "_mapguard", "File mappings whose SIGBUS faults read as zeros.", -1, guard_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__mapguard(void)
{
    page_mask = ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
    if (PyType_Ready(&MappingType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&guard_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "SLOTS", SLOTS) < 0 ||
        PyModule_AddIntConstant(module, "MADV_WILLNEED", MADV_WILLNEED) < 0 ||
        PyModule_AddIntConstant(module, "MADV_DONTNEED", MADV_DONTNEED) < 0 ||
        PyModule_AddIntConstant(module, "MADV_POPULATE_READ", MADV_POPULATE_READ_VALUE) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
