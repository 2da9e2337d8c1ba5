// The few messages of Streamlit's component protocol (what streamlit-component-lib does, without React).
export interface RenderArgs {
  [key: string]: unknown;
}

function send(type: string, data: Record<string, unknown> = {}): void {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

export function onRender(callback: (args: RenderArgs) => void): void {
  window.addEventListener("message", (event: MessageEvent) => {
    // Only Streamlit's page (our parent) renders us.
    if (event.source !== window.parent) return;
    if (event.data?.type === "streamlit:render") callback(event.data.args as RenderArgs);
  });
  send("streamlit:componentReady", { apiVersion: 1 });
}

export function setComponentValue(value: unknown): void {
  send("streamlit:setComponentValue", { value, dataType: "json" });
}

export function setFrameHeight(height: number): void {
  send("streamlit:setFrameHeight", { height });
}
