// SPDX-License-Identifier: MIT
// The bundled `python` plugin: runs a Python function per item in an embedded CPython.
#include <Python.h>
#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <coremap/plugin.hpp>

#include "json_convert.hpp"

namespace {

// The interpreter: the host's when the plugin is loaded into a Python process (the coremap
// Python package running it in process), else one embedded here, started once per process and
// never finalized (a plugin library may be unloaded, libpython stays: RTLD_NODELETE).
void ensure_interpreter() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (Py_IsInitialized()) return;
    // Extension modules (numpy, ...) do not link libpython: they expect its symbols in the
    // process's global scope, where a plugin loaded RTLD_LOCAL does not put them.
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&Py_InitializeEx), &info) != 0 && info.dli_fname != nullptr) {
      ::dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD | RTLD_NODELETE);
    }
    Py_InitializeEx(0);  // 0: no signal handlers; coremap and its workers keep their own
    PyRun_SimpleString("import sys\nsys.argv = ['coremap-python']\n");
    PyEval_SaveThread();  // the GIL is taken per call (PyGILState_Ensure)
  });
}

class Gil {
 public:
  Gil() : state_(PyGILState_Ensure()) {}
  ~Gil() { PyGILState_Release(state_); }
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;

 private:
  PyGILState_STATE state_;
};

// Owns one reference.
class Ref {
 public:
  explicit Ref(PyObject* object = nullptr) noexcept : object_(object) {}
  ~Ref() { Py_XDECREF(object_); }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  void reset(PyObject* object) noexcept {
    Py_XDECREF(object_);
    object_ = object;
  }
  PyObject* get() const noexcept { return object_; }
  explicit operator bool() const noexcept { return object_ != nullptr; }

 private:
  PyObject* object_;
};

[[noreturn]] void fail_with_python_error(const std::string& what) {
  throw std::runtime_error(what + ":\n" + coremap::python::describe_python_error());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

/// Calls a Python function per item: {"function": "module:function"} (or "path/to/file.py:function",
/// or a dotted attribute path after the colon). The item is passed as a Python value (dicts, lists,
/// str, int, float, bool, None), the return value becomes the result; an exception is the item's
/// error, with its traceback. One interpreter per process: under --isolate each worker process has
/// its own, so N workers run N items at once; in one process the GIL runs one item at a time.
class PythonFunction {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"function", "string", nullptr, "module:function, or path/to/file.py:function, called once per item"},
      {"sys_path", "array", "[]", "directories put at the front of sys.path before the import"},
      {"star", "boolean", "false", "call function(*item) with the item's elements as arguments (starmap)"},
  };

  explicit PythonFunction(const coremap::Json& config) : star_(config.at("star").get<bool>()) {
    const std::string spec = config.at("function").get<std::string>();
    const std::size_t colon = spec.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size()) {
      throw std::invalid_argument("config key \"function\" must be \"module:function\" or \"path/to/file.py:function\", got \"" +
                                  spec + "\"");
    }
    const std::string module_name = spec.substr(0, colon);
    const std::string attribute = spec.substr(colon + 1);
    ensure_interpreter();
    Gil gil;
    Ref sys(PyImport_ImportModule("sys"));
    if (!sys) fail_with_python_error("cannot import sys");
    PyObject* path = PyObject_GetAttrString(sys.get(), "path");  // new reference
    Ref path_ref(path);
    if (!path || !PyList_Check(path)) throw std::runtime_error("sys.path is not a list");
    std::vector<std::string> front;
    for (const auto& entry : config.at("sys_path")) {
      if (!entry.is_string()) throw std::invalid_argument("config key \"sys_path\" must hold strings, got " + entry.dump());
      front.push_back(entry.get<std::string>());
    }
    const bool file = ends_with(module_name, ".py") || module_name.find('/') != std::string::npos;
    if (file) {
      // The script's directory first, as Python does for a script it runs.
      const std::size_t slash = module_name.rfind('/');
      front.insert(front.begin(), slash == std::string::npos ? std::string(".") : module_name.substr(0, slash == 0 ? 1 : slash));
    }
    for (auto it = front.rbegin(); it != front.rend(); ++it) {
      Ref entry(PyUnicode_FromString(it->c_str()));
      if (!entry) fail_with_python_error("cannot extend sys.path");
      const int present = PySequence_Contains(path, entry.get());
      if (present == 1) continue;  // a worker forked from the caller has its sys.path already
      if (present < 0 || PyList_Insert(path, 0, entry.get()) != 0) fail_with_python_error("cannot extend sys.path");
    }
    Ref module;
    if (file) {
      // A worker forked from the caller (the Python package's fork server) has the script as
      // its own __main__ already.
      module.reset(running_main(module_name, attribute));
      if (!module) module.reset(import_file(module_name));
    } else {
      module.reset(PyImport_ImportModule(module_name.c_str()));
      if (!module) fail_with_python_error("cannot import module '" + module_name + "'");
    }
    // "Outer.inner" walks attributes.
    Ref target(Py_NewRef(module.get()));
    std::size_t start = 0;
    while (start <= attribute.size()) {
      const std::size_t dot = attribute.find('.', start);
      const std::string part = attribute.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      PyObject* next = PyObject_GetAttrString(target.get(), part.c_str());
      if (next == nullptr) fail_with_python_error("'" + module_name + "' has no attribute '" + attribute + "'");
      target.reset(next);
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (!PyCallable_Check(target.get())) {
      throw std::invalid_argument("'" + spec + "' is a " + Py_TYPE(target.get())->tp_name + ", not a function");
    }
    function_ = target.get();
    Py_INCREF(function_);
  }

  ~PythonFunction() {
    if (function_ != nullptr && Py_IsInitialized()) {
      Gil gil;
      Py_DECREF(function_);
      // What the function printed is still in Python's buffers: the worker ends without
      // finalizing the interpreter.
      for (const char* name : {"stdout", "stderr"}) {
        PyObject* stream = PySys_GetObject(name);  // borrowed
        if (stream == nullptr || stream == Py_None) continue;
        Ref flushed(PyObject_CallMethod(stream, "flush", nullptr));
        if (!flushed) PyErr_Clear();
      }
    }
  }
  PythonFunction(const PythonFunction&) = delete;
  PythonFunction& operator=(const PythonFunction&) = delete;

  coremap::Json process(const coremap::Json& item) {
    Gil gil;
    Ref argument(coremap::python::from_json(item));
    if (!argument) fail_with_python_error("cannot convert the item to Python");
    Ref result;
    if (star_) {
      if (!PyList_Check(argument.get())) {
        throw std::invalid_argument("config \"star\": the item must be a JSON array of arguments, got " +
                                    std::string(item.type_name()));
      }
      Ref arguments(PyList_AsTuple(argument.get()));
      if (!arguments) fail_with_python_error("cannot make the argument tuple");
      result.reset(PyObject_Call(function_, arguments.get(), nullptr));
    } else {
      result.reset(PyObject_CallOneArg(function_, argument.get()));
    }
    if (!result) throw std::runtime_error(coremap::python::describe_python_error());
    coremap::Json out;
    std::string why;
    std::string where;
    if (!coremap::python::to_json(result.get(), out, why, where)) {
      throw std::invalid_argument("the function's return value is not JSON: " + why);
    }
    return out;
  }

 private:
  // The process's __main__ module when it is the script at `path` and has `attribute` (a
  // worker forked from the caller after the function was defined), else null (no error set).
  static PyObject* running_main(const std::string& path, const std::string& attribute) {
    PyObject* modules = PyImport_GetModuleDict();  // borrowed
    PyObject* main = PyDict_GetItemString(modules, "__main__");  // borrowed
    if (main == nullptr) return nullptr;
    Ref file(PyObject_GetAttrString(main, "__file__"));
    if (!file || !PyUnicode_Check(file.get())) {
      PyErr_Clear();
      return nullptr;
    }
    Ref os_path(PyImport_ImportModule("os.path"));
    Ref absolute(os_path ? PyObject_CallMethod(os_path.get(), "abspath", "O", file.get()) : nullptr);
    const char* text = absolute && PyUnicode_Check(absolute.get()) ? PyUnicode_AsUTF8(absolute.get()) : nullptr;
    if (text == nullptr || path != text) {
      PyErr_Clear();
      return nullptr;
    }
    // Defined by then? (The first part of a dotted attribute is enough to tell.)
    const std::string first = attribute.substr(0, attribute.find('.'));
    if (PyObject_HasAttrString(main, first.c_str()) != 1) return nullptr;
    Py_INCREF(main);
    return main;
  }

  // Loads a script file as the module "__mp_main__" (the name multiprocessing gives the parent's
  // main script in its children), so its `if __name__ == "__main__":` block does not run.
  static PyObject* import_file(const std::string& path) {
    Ref util(PyImport_ImportModule("importlib.util"));
    if (!util) fail_with_python_error("cannot import importlib.util");
    Ref spec(PyObject_CallMethod(util.get(), "spec_from_file_location", "ss", "__mp_main__", path.c_str()));
    if (!spec || spec.get() == Py_None) {
      if (PyErr_Occurred()) fail_with_python_error("cannot load '" + path + "'");
      throw std::invalid_argument("cannot load '" + path + "' as a Python module");
    }
    Ref module(PyObject_CallMethod(util.get(), "module_from_spec", "O", spec.get()));
    if (!module) fail_with_python_error("cannot load '" + path + "'");
    Ref modules(PyImport_GetModuleDict());
    Py_INCREF(modules.get());  // borrowed
    if (PyDict_SetItemString(modules.get(), "__mp_main__", module.get()) != 0) fail_with_python_error("sys.modules");
    // The coremap package stops the script at its first coremap run (raising a BaseException
    // after setting sys._coremap_main_stopped) while this flag is set: the functions above it
    // are defined, and a script without `if __name__ == "__main__":` does not start a run of
    // its own in every worker.
    PySys_SetObject("_coremap_importing_main", Py_True);
    Ref loader(PyObject_GetAttrString(spec.get(), "loader"));
    Ref executed(loader ? PyObject_CallMethod(loader.get(), "exec_module", "O", module.get()) : nullptr);
    PySys_SetObject("_coremap_importing_main", Py_False);
    if (!executed) {
      PyObject* stopped = PySys_GetObject("_coremap_main_stopped");  // borrowed
      if (stopped != nullptr && PyObject_IsTrue(stopped) == 1) {
        PyErr_Clear();
        PySys_SetObject("_coremap_main_stopped", Py_False);
      } else {
        PyDict_DelItemString(modules.get(), "__mp_main__");
        fail_with_python_error("running '" + path + "' failed");
      }
    }
    Py_INCREF(module.get());
    return module.get();
  }

  bool star_;
  PyObject* function_ = nullptr;
};

COREMAP_PLUGIN(PythonFunction, "python", "1.0.0",
               "calls a Python function (config \"function\": \"module:function\") per item, in an embedded CPython")
