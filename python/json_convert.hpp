// SPDX-License-Identifier: MIT
#pragma once

// Conversions between Python objects and coremap's JSON values (nlohmann::json), with the
// C API only, shared by the `_coremap` extension module and the bundled `python` plugin.
// Both directions need the GIL. JSON values are dict (str keys), list (tuple becomes a list),
// str, int (64-bit, signed or unsigned), float (finite), bool and None; anything else is a
// TypeError-like failure that says where in the value it is (a JSON pointer) and what it was.

#include <Python.h>

#include <cmath>
#include <cstdint>
#include <string>

#include <coremap/plugin.hpp>

namespace coremap::python {

inline constexpr int max_depth = 1000;  // as deep as a manifest item may nest

// Appends a JSON pointer token (RFC 6901 escaping) to `where`.
inline void append_pointer(std::string& where, const std::string& token) {
  where += '/';
  for (char c : token) {
    if (c == '~') {
      where += "~0";
    } else if (c == '/') {
      where += "~1";
    } else {
      where += c;
    }
  }
}

// `object` as JSON; false with `why` ("<type> at <pointer> is not a JSON value ...") otherwise.
// Never leaves a Python error set.
inline bool to_json(PyObject* object, Json& out, std::string& why, std::string& where, int depth = 0) {
  if (depth > max_depth) {
    why = "nested deeper than " + std::to_string(max_depth) + " levels at " + (where.empty() ? "/" : where);
    return false;
  }
  if (object == Py_None) {
    out = nullptr;
    return true;
  }
  if (PyBool_Check(object)) {
    out = object == Py_True;
    return true;
  }
  if (PyLong_Check(object)) {
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(object, &overflow);
    if (overflow == 0) {
      if (value == -1 && PyErr_Occurred()) PyErr_Clear();
      out = static_cast<std::int64_t>(value);
      return true;
    }
    if (overflow > 0) {
      const unsigned long long u = PyLong_AsUnsignedLongLong(object);
      if (!(u == static_cast<unsigned long long>(-1) && PyErr_Occurred())) {
        out = static_cast<std::uint64_t>(u);
        return true;
      }
      PyErr_Clear();
    }
    why = "int at " + (where.empty() ? std::string("/") : where) +
          " does not fit in 64 bits (JSON numbers are 64-bit integers or doubles)";
    return false;
  }
  if (PyFloat_Check(object)) {
    const double value = PyFloat_AS_DOUBLE(object);
    if (!std::isfinite(value)) {
      why = "float " + std::string(std::isnan(value) ? "nan" : "inf") + " at " + (where.empty() ? "/" : where) +
            " is not a JSON number (JSON has no NaN or infinity)";
      return false;
    }
    out = value;
    return true;
  }
  if (PyUnicode_Check(object)) {
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(object, &size);
    if (text == nullptr) {
      PyErr_Clear();
      why = "str at " + (where.empty() ? std::string("/") : where) + " is not valid UTF-8 (a lone surrogate)";
      return false;
    }
    out = std::string(text, static_cast<std::size_t>(size));
    return true;
  }
  if (PyList_Check(object) || PyTuple_Check(object)) {
    const bool list = PyList_Check(object);
    const Py_ssize_t n = list ? PyList_GET_SIZE(object) : PyTuple_GET_SIZE(object);
    out = Json::array();
    auto& array = out.get_ref<Json::array_t&>();
    array.reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* element = list ? PyList_GET_ITEM(object, i) : PyTuple_GET_ITEM(object, i);
      const std::size_t mark = where.size();
      where += '/';
      where += std::to_string(i);
      array.emplace_back();
      Py_INCREF(element);  // a list may change under a callback; hold the element
      const bool ok = to_json(element, array.back(), why, where, depth + 1);
      Py_DECREF(element);
      if (!ok) return false;
      where.resize(mark);
    }
    return true;
  }
  if (PyDict_Check(object)) {
    out = Json::object();
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    Py_ssize_t position = 0;
    while (PyDict_Next(object, &position, &key, &value)) {
      if (!PyUnicode_Check(key)) {
        why = "dict at " + (where.empty() ? std::string("/") : where) + " has a key of type " +
              Py_TYPE(key)->tp_name + " (JSON object keys are str)";
        return false;
      }
      Py_ssize_t size = 0;
      const char* text = PyUnicode_AsUTF8AndSize(key, &size);
      if (text == nullptr) {
        PyErr_Clear();
        why = "dict at " + (where.empty() ? std::string("/") : where) + " has a key that is not valid UTF-8";
        return false;
      }
      std::string name(text, static_cast<std::size_t>(size));
      const std::size_t mark = where.size();
      append_pointer(where, name);
      Json& slot = out[name];
      if (!to_json(value, slot, why, where, depth + 1)) return false;
      where.resize(mark);
    }
    return true;
  }
  why = std::string(Py_TYPE(object)->tp_name) + " at " + (where.empty() ? "/" : where) +
        " is not a JSON value (dict, list, tuple, str, int, float, bool or None)";
  return false;
}

// A new reference to `value` as a Python object, or nullptr with a Python error set.
inline PyObject* from_json(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      Py_RETURN_NONE;
    case Json::value_t::boolean:
      if (value.get<bool>()) Py_RETURN_TRUE;
      Py_RETURN_FALSE;
    case Json::value_t::number_integer:
      return PyLong_FromLongLong(value.get<std::int64_t>());
    case Json::value_t::number_unsigned:
      return PyLong_FromUnsignedLongLong(value.get<std::uint64_t>());
    case Json::value_t::number_float:
      return PyFloat_FromDouble(value.get<double>());
    case Json::value_t::string: {
      const auto& s = value.get_ref<const std::string&>();
      return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
    }
    case Json::value_t::array: {
      const auto& array = value.get_ref<const Json::array_t&>();
      PyObject* list = PyList_New(static_cast<Py_ssize_t>(array.size()));
      if (list == nullptr) return nullptr;
      for (std::size_t i = 0; i < array.size(); ++i) {
        PyObject* element = from_json(array[i]);
        if (element == nullptr) {
          Py_DECREF(list);
          return nullptr;
        }
        PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), element);
      }
      return list;
    }
    case Json::value_t::object: {
      PyObject* dict = PyDict_New();
      if (dict == nullptr) return nullptr;
      for (const auto& [key, element] : value.items()) {
        PyObject* v = from_json(element);
        if (v == nullptr) {
          Py_DECREF(dict);
          return nullptr;
        }
        PyObject* k = PyUnicode_DecodeUTF8(key.data(), static_cast<Py_ssize_t>(key.size()), "surrogateescape");
        if (k == nullptr || PyDict_SetItem(dict, k, v) != 0) {
          Py_XDECREF(k);
          Py_DECREF(v);
          Py_DECREF(dict);
          return nullptr;
        }
        Py_DECREF(k);
        Py_DECREF(v);
      }
      return dict;
    }
    default:
      PyErr_SetString(PyExc_TypeError, "coremap: a JSON value of a kind Python cannot hold (binary or discarded)");
      return nullptr;
  }
}

// The Python error in flight as text: the traceback as Python prints it (traceback module),
// or "Type: message" when that fails. Clears the error. Needs the GIL.
inline std::string describe_python_error() {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* traceback = nullptr;
  PyErr_Fetch(&type, &value, &traceback);
  if (type == nullptr) return "unknown Python error";
  PyErr_NormalizeException(&type, &value, &traceback);
  if (traceback != nullptr && value != nullptr) PyException_SetTraceback(value, traceback);
  std::string text;
  if (PyObject* module = PyImport_ImportModule("traceback")) {
    PyObject* lines = PyObject_CallMethod(module, "format_exception", "OOO", type, value ? value : Py_None,
                                          traceback ? traceback : Py_None);
    if (lines != nullptr) {
      PyObject* empty = PyUnicode_FromString("");
      PyObject* joined = empty ? PyUnicode_Join(empty, lines) : nullptr;
      if (joined != nullptr) {
        if (const char* s = PyUnicode_AsUTF8(joined)) text = s;
      }
      Py_XDECREF(joined);
      Py_XDECREF(empty);
      Py_DECREF(lines);
    }
    Py_DECREF(module);
  }
  if (text.empty()) {
    PyErr_Clear();
    PyObject* shown = value ? PyObject_Str(value) : nullptr;
    const char* message = shown ? PyUnicode_AsUTF8(shown) : nullptr;
    text = std::string(reinterpret_cast<PyTypeObject*>(type)->tp_name) + ": " + (message ? message : "");
    Py_XDECREF(shown);
  }
  PyErr_Clear();
  while (!text.empty() && text.back() == '\n') text.pop_back();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
  return text;
}

}  // namespace coremap::python
