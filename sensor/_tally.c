/*
 * The anomaly detector's per-observation step, compiled, for its common case only: a camera's observation of a
 * variant (peer, proto, port, initiated, external) its current window has already seen. That case is ~93% of the
 * calls (one per flow and second of camera traffic) and needs only sums; in Python it cost ~2 us a call at
 * 1,000 cameras, mostly the interpreter's own work (docs/benchmarks.md, the model's cost). Here the slots of the
 * observation, the window and the conversation record are read and written at their member offsets.
 *
 * Tally(features, fallback, observation_type, window_type, external, camera_evidence, not_camera_evidence,
 * nvr_evidence) is called as
 * fallback would be, tally(obs), and does exactly what fallback (WindowFeatures.tally, the reference) does, with
 * the same effects in the same order: the camera filter (the evidence, then Device.role when the evidence does
 * not settle it), the window's sums (flagging it as touched since the last look), the record's sums. Anything
 * else is handed to fallback before anything is changed: an observation or window of another type, no current
 * window for the device at the observation's start (a new window, or a late observation folded forward), a
 * variant the window has not seen, a record that is not a slotted object. The tests hold the two to each other
 * (tests/unit/test_model.py).
 *
 * features is the WindowFeatures: its `window` is read once (it never changes), its `_latest` dict (device ->
 * its latest open window; never replaced) is kept, its `_closed_until` and `_touched` are read when needed.
 * Device attributes are read the generic way: Device is a plain dataclass.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

enum { O_TS, O_DEVICE, O_SENT_PACKETS, O_SENT_BYTES, O_INITIATED, O_PEER, O_PORT, O_PROTO, O_NAME, O_SCOPE,
       O_NEW_FLOW, NOBS };
static const char *OBS_SLOTS[NOBS] = {"ts", "device", "sent_packets", "sent_bytes", "initiated", "peer", "port",
                                      "proto", "name", "scope", "new_flow"};
enum { W_START, W_TOUCHED, W_PACKETS, W_BYTES, W_NEW_FLOWS, W_EXTERNAL_BYTES, W_SEEN, NWIN };
static const char *WIN_SLOTS[NWIN] = {"start", "touched", "packets", "bytes", "new_flows", "external_bytes", "seen"};
enum { R_BYTES, R_PACKETS, R_NEW_FLOWS, R_NAME, NREC };
static const char *REC_SLOTS[NREC] = {"bytes", "packets", "new_flows", "name"};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *features, *fallback, *latest, *external, *camera_evidence, *not_camera_evidence, *nvr_evidence;
    PyObject *closed_name, *touched_name, *ip_name, *evidence_name, *role_name, *camera_role;
    PyTypeObject *obs_type, *win_type;
    PyTypeObject *rec_type;   /* the records' type (the note's), learnt from the first slotted one seen */
    double window;
    Py_ssize_t obs_off[NOBS], win_off[NWIN], rec_off[NREC];
} Tally;

/* The offset of each slot named, or -1 with TypeError when one is not a plain slot of `type`. */
static int slot_offsets(PyTypeObject *type, const char **names, int n, Py_ssize_t *out, int quiet)
{
    for (int i = 0; i < n; i++) {
        PyObject *name = PyUnicode_InternFromString(names[i]);
        if (name == NULL)
            return -1;
        PyObject *d = _PyType_Lookup(type, name);   /* borrowed: the type keeps it */
        Py_DECREF(name);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
                || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            if (quiet)
                PyErr_Clear();
            else
                PyErr_Format(PyExc_TypeError, "Tally: %s.%s is not a slot", type->tp_name, names[i]);
            return -1;
        }
        out[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    return 0;
}

/* a += b on a slot, as Python's `obj.attr += b` (ints have no in-place add: a new object replaces the old). */
static int add_to(PyObject *obj, Py_ssize_t off, PyObject *b)
{
    PyObject *sum = PyNumber_InPlaceAdd(SLOT(obj, off), b);
    if (sum == NULL)
        return -1;
    Py_SETREF(SLOT(obj, off), sum);
    return 0;
}

/* Whether two sets have an item in common (not a.isdisjoint(b)): 1 yes, 0 no, -1 error. */
static int common(PyObject *a, PyObject *b)
{
    if (PySet_GET_SIZE(a) > PySet_GET_SIZE(b)) {   /* the smaller one walked, as set.isdisjoint does */
        PyObject *c = a;
        a = b;
        b = c;
    }
    Py_ssize_t pos = 0;
    PyObject *item;
    Py_hash_t hash;
    while (_PySet_NextEntry(a, &pos, &item, &hash)) {
        Py_INCREF(item);
        int has = PySet_Contains(b, item);
        Py_DECREF(item);
        if (has != 0)
            return has;
    }
    return 0;
}

enum { ASK_ROLE, CAMERA, NOT_CAMERA };

/* What the device's evidence settles of its role, as tally reads it (Device.role's first four steps): CAMERA,
 * NOT_CAMERA, ASK_ROLE (the property decides), or -1 with an error. */
static int role_by_evidence(Tally *t, PyObject *evidence)
{
    if (!PyAnySet_CheckExact(evidence))
        return ASK_ROLE;
    int has = PySet_Contains(evidence, t->nvr_evidence);
    if (has != 0)
        return has < 0 ? -1 : NOT_CAMERA;
    if ((has = common(evidence, t->camera_evidence)) != 0)
        return has < 0 ? -1 : CAMERA;
    if ((has = common(evidence, t->not_camera_evidence)) != 0)
        return has < 0 ? -1 : NOT_CAMERA;
    return ASK_ROLE;
}

/* scope in external (a tuple of str), as Python's `in`: identity, then equality, which for two str is their text. */
static int in_external(Tally *t, PyObject *scope)
{
    Py_ssize_t n = PyTuple_GET_SIZE(t->external);
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyTuple_GET_ITEM(t->external, i) == scope)
            return 1;
    if (!PyUnicode_CheckExact(scope))
        return PySequence_Contains(t->external, scope);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(t->external, i);
        if (PyUnicode_GET_LENGTH(item) == PyUnicode_GET_LENGTH(scope) && PyUnicode_Compare(item, scope) == 0)
            return 1;
    }
    return 0;
}

static PyObject *hand_over(Tally *t, PyObject *obs)
{
    return PyObject_CallOneArg(t->fallback, obs);
}

static PyObject *tally_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Tally *t = (Tally *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Tally takes one observation");
        return NULL;
    }
    PyObject *obs = args[0];
    if (Py_TYPE(obs) != t->obs_type)
        return hand_over(t, obs);
    const Py_ssize_t *o = t->obs_off;
    for (int i = 0; i < NOBS; i++)
        if (SLOT(obs, o[i]) == NULL)   /* an unset slot: fallback raises what Python would */
            return hand_over(t, obs);
    PyObject *packets = SLOT(obs, o[O_SENT_PACKETS]), *ts = SLOT(obs, o[O_TS]);
    if (!PyLong_CheckExact(packets) || !PyFloat_CheckExact(ts))
        return hand_over(t, obs);
    if (_PyLong_Sign(packets) <= 0)   /* sent nothing: not the device's behaviour */
        Py_RETURN_NONE;
    double start = floor(PyFloat_AS_DOUBLE(ts) / t->window) * t->window;
    if (!isfinite(start))   /* math.floor raises on these: fallback does */
        return hand_over(t, obs);

    PyObject *device = SLOT(obs, o[O_DEVICE]);
    PyObject *evidence = PyObject_GetAttr(device, t->evidence_name);
    if (evidence == NULL)
        return NULL;
    int role = role_by_evidence(t, evidence);
    Py_DECREF(evidence);
    if (role < 0)
        return NULL;
    if (role == NOT_CAMERA)
        Py_RETURN_NONE;
    if (role == ASK_ROLE) {   /* the property itself (it only reads), as tally asks it */
        PyObject *name = PyObject_GetAttr(device, t->role_name);
        if (name == NULL)
            return NULL;
        int camera = PyObject_RichCompareBool(name, t->camera_role, Py_EQ);
        Py_DECREF(name);
        if (camera < 0)
            return NULL;
        if (!camera)
            Py_RETURN_NONE;
    }

    /* Before the window is borrowed from _latest: `in` on a scope that is not a str runs its __eq__. */
    int external = in_external(t, SLOT(obs, o[O_SCOPE]));
    if (external < 0)
        return NULL;

    /* A start before the last close is folded forward; the window there is never the device's latest as it
     * stands, so those go to fallback too (it folds them). */
    PyObject *closed = PyObject_GetAttr(t->features, t->closed_name);
    if (closed == NULL)
        return NULL;
    int late = !PyFloat_CheckExact(closed) || start < PyFloat_AS_DOUBLE(closed);
    Py_DECREF(closed);
    if (late)
        return hand_over(t, obs);
    PyObject *ip = PyObject_GetAttr(device, t->ip_name);
    if (ip == NULL)
        return NULL;
    PyObject *acc = PyDict_GetItemWithError(t->latest, ip);   /* borrowed */
    Py_DECREF(ip);
    if (acc == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return hand_over(t, obs);
    }
    const Py_ssize_t *w = t->win_off;
    if (Py_TYPE(acc) != t->win_type)
        return hand_over(t, obs);
    for (int i = 0; i < NWIN; i++)
        if (SLOT(acc, w[i]) == NULL)
            return hand_over(t, obs);
    PyObject *acc_start = SLOT(acc, w[W_START]), *seen = SLOT(acc, w[W_SEEN]);
    PyObject *touched = SLOT(acc, w[W_TOUCHED]);
    if (!PyFloat_CheckExact(acc_start) || PyFloat_AS_DOUBLE(acc_start) != start
            || (touched != Py_True && touched != Py_False) || !PyDict_CheckExact(seen))
        return hand_over(t, obs);

    PyObject *key = PyTuple_Pack(5, SLOT(obs, o[O_PEER]), SLOT(obs, o[O_PROTO]), SLOT(obs, o[O_PORT]),
                                 SLOT(obs, o[O_INITIATED]), external ? Py_True : Py_False);
    if (key == NULL)
        return NULL;
    Py_INCREF(acc);   /* held, with the record, while the key is hashed and the sums made */
    PyObject *found = PyDict_GetItemWithError(seen, key);
    Py_DECREF(key);
    if (found == NULL) {
        Py_DECREF(acc);
        if (PyErr_Occurred())
            return NULL;
        return hand_over(t, obs);   /* a variant the window has not seen: its sets take it (first sight) */
    }
    Py_INCREF(found);
    if (found != Py_None) {
        int usable = 1;
        if (Py_TYPE(found) != t->rec_type) {
            /* The first slotted record seen: its type is learnt (the note returns one type). */
            usable = t->rec_type == NULL && slot_offsets(Py_TYPE(found), REC_SLOTS, NREC, t->rec_off, 1) == 0;
            if (usable)
                t->rec_type = (PyTypeObject *)Py_NewRef(Py_TYPE(found));
        }
        for (int i = 0; usable && i < NREC; i++)
            usable = SLOT(found, t->rec_off[i]) != NULL;
        if (!usable) {
            Py_DECREF(found);
            Py_DECREF(acc);
            return hand_over(t, obs);
        }
    }

    /* The common case: observe's steps, then the record's sums, in tally's order. The first change since the
     * last look flags the window and lists it in features._touched (a list the looks replace: read each time). */
    if (touched == Py_False) {
        PyObject *listed = PyObject_GetAttr(t->features, t->touched_name);
        int failed = listed == NULL || !PyList_CheckExact(listed);
        if (!failed) {
            Py_SETREF(SLOT(acc, w[W_TOUCHED]), Py_NewRef(Py_True));
            failed = PyList_Append(listed, acc);
        } else if (listed != NULL) {
            PyErr_SetString(PyExc_TypeError, "Tally: features._touched must be a list");
        }
        Py_XDECREF(listed);
        if (failed) {
            Py_DECREF(found);
            Py_DECREF(acc);
            return NULL;
        }
    }
    PyObject *sent_bytes = SLOT(obs, o[O_SENT_BYTES]), *new_flow = SLOT(obs, o[O_NEW_FLOW]);
    int fresh = -1;
    if (add_to(acc, w[W_PACKETS], packets) < 0 || add_to(acc, w[W_BYTES], sent_bytes) < 0
            || (fresh = PyObject_IsTrue(new_flow)) < 0)
        goto error;
    if (fresh) {
        PyObject *one = PyLong_FromLong(1);
        int failed = add_to(acc, w[W_NEW_FLOWS], one);
        Py_DECREF(one);
        if (failed < 0)
            goto error;
    }
    if (external && add_to(acc, w[W_EXTERNAL_BYTES], sent_bytes) < 0)
        goto error;
    if (found != Py_None) {
        const Py_ssize_t *r = t->rec_off;
        if (add_to(found, r[R_BYTES], sent_bytes) < 0 || add_to(found, r[R_PACKETS], packets) < 0
                || add_to(found, r[R_NEW_FLOWS], new_flow) < 0)
            goto error;
        int named = PyObject_IsTrue(SLOT(found, r[R_NAME]));
        if (named < 0)
            goto error;
        if (!named)
            Py_XSETREF(SLOT(found, r[R_NAME]), Py_NewRef(SLOT(obs, o[O_NAME])));
    }
    Py_DECREF(found);
    Py_DECREF(acc);
    Py_RETURN_NONE;
error:
    Py_DECREF(found);
    Py_DECREF(acc);
    return NULL;
}

static PyObject *tally_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *features, *fallback, *obs_type, *win_type, *external, *camera_evidence, *not_camera_evidence;
    PyObject *nvr_evidence;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Tally takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOO!O!O!O!O!U", &features, &fallback, &PyType_Type, &obs_type, &PyType_Type,
                          &win_type, &PyTuple_Type, &external, &PyFrozenSet_Type, &camera_evidence, &PyFrozenSet_Type,
                          &not_camera_evidence, &nvr_evidence))
        return NULL;
    Tally *t = (Tally *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->vectorcall = tally_call;
    t->features = Py_NewRef(features);
    t->fallback = Py_NewRef(fallback);
    t->obs_type = (PyTypeObject *)Py_NewRef(obs_type);
    t->win_type = (PyTypeObject *)Py_NewRef(win_type);
    t->external = Py_NewRef(external);
    t->camera_evidence = Py_NewRef(camera_evidence);
    t->not_camera_evidence = Py_NewRef(not_camera_evidence);
    t->nvr_evidence = Py_NewRef(nvr_evidence);
    PyObject *window = NULL;
    if ((t->closed_name = PyUnicode_InternFromString("_closed_until")) == NULL
            || (t->touched_name = PyUnicode_InternFromString("_touched")) == NULL
            || (t->ip_name = PyUnicode_InternFromString("ip")) == NULL
            || (t->role_name = PyUnicode_InternFromString("role")) == NULL
            || (t->camera_role = PyUnicode_InternFromString("camera")) == NULL
            || (t->evidence_name = PyUnicode_InternFromString("evidence")) == NULL
            || slot_offsets(t->obs_type, OBS_SLOTS, NOBS, t->obs_off, 0) < 0
            || slot_offsets(t->win_type, WIN_SLOTS, NWIN, t->win_off, 0) < 0
            || (t->latest = PyObject_GetAttrString(features, "_latest")) == NULL
            || (window = PyObject_GetAttrString(features, "window")) == NULL)
        goto error;
    if (!PyDict_CheckExact(t->latest) || !PyFloat_CheckExact(window)) {
        PyErr_SetString(PyExc_TypeError, "Tally: features._latest must be a dict and features.window a float");
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(external); i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(external, i))) {
            PyErr_SetString(PyExc_TypeError, "Tally: the external scopes must be str");
            goto error;
        }
    t->window = PyFloat_AS_DOUBLE(window);
    Py_DECREF(window);
    return (PyObject *)t;
error:
    Py_XDECREF(window);
    Py_DECREF(t);
    return NULL;
}

static int tally_traverse(Tally *t, visitproc visit, void *arg)
{
    Py_VISIT(t->features);
    Py_VISIT(t->fallback);
    Py_VISIT(t->latest);
    Py_VISIT(t->rec_type);
    return 0;
}

static int tally_clear(Tally *t)
{
    Py_CLEAR(t->features);
    Py_CLEAR(t->fallback);
    Py_CLEAR(t->latest);
    Py_CLEAR(t->rec_type);
    return 0;
}

static void tally_dealloc(Tally *t)
{
    PyObject_GC_UnTrack(t);
    tally_clear(t);
    Py_XDECREF(t->external);
    Py_XDECREF(t->camera_evidence);
    Py_XDECREF(t->not_camera_evidence);
    Py_XDECREF(t->nvr_evidence);
    Py_XDECREF(t->closed_name);
    Py_XDECREF(t->touched_name);
    Py_XDECREF(t->ip_name);
    Py_XDECREF(t->role_name);
    Py_XDECREF(t->camera_role);
    Py_XDECREF(t->evidence_name);
    Py_XDECREF(t->obs_type);
    Py_XDECREF(t->win_type);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyTypeObject TallyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sensor._tally.Tally",
    .tp_basicsize = sizeof(Tally),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Tally, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = tally_new,
    .tp_traverse = (traverseproc)tally_traverse,
    .tp_clear = (inquiry)tally_clear,
    .tp_dealloc = (destructor)tally_dealloc,
    .tp_doc = "WindowFeatures.tally's common case compiled; everything else handed to the Python step.",
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tally", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__tally(void)
{
    if (PyType_Ready(&TallyType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Tally", (PyObject *)&TallyType) < 0)
        Py_CLEAR(m);
    return m;
}
