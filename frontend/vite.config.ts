import { defineConfig } from "vite";

// The build lands inside the Python package, so the wheel carries it (no network at run time).
export default defineConfig({
  base: "./",
  build: {
    outDir: "../component/streamlit_secure_context/frontend",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // Not minified: the sandbox's code is shipped as the source text of named functions
    // (Function.prototype.toString), which must keep their names.
    minify: false,
    rollupOptions: {
      // The component page (served by Streamlit) and the isolated sandbox page (served by the edge).
      input: { index: "index.html", sandbox: "sandbox.html" },
    },
  },
  test: {
    include: ["tests/**/*.test.ts"],
  },
});
