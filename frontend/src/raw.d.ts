// Vite's `?raw` imports: a file's text as a string (dicom-parser's build, put into the worker's source).
declare module "*?raw" {
  const text: string;
  export default text;
}
