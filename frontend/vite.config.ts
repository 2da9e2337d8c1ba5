import { defineConfig } from "vite";

// The build lands inside the Python package, so the wheel carries it (no network at run time).
// Two builds: the component page (served by Streamlit) alone, so its code is one file that
// scripts/inline-entry.mjs puts inside index.html (one request fewer before the sandbox can start);
// then, with `--mode sandbox`, the isolated sandbox page (served by the edge) beside it.
export default defineConfig(({ mode }) => ({
  base: "./",
  build: {
    outDir: "../component/streamlit_secure_context/frontend",
    emptyOutDir: mode !== "sandbox",
    target: "es2022",
    sourcemap: false,
    // Not minified: the sandbox's code is shipped as the source text of named functions
    // (Function.prototype.toString), which must keep their names.
    minify: false,
    modulePreload: false,
    rollupOptions: {
      input: mode === "sandbox" ? { sandbox: "sandbox.html" } : { index: "index.html" },
    },
  },
  test: {
    include: ["tests/**/*.test.ts"],
  },
}));
