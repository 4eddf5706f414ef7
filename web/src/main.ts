import "uplot/dist/uPlot.min.css";
import "./style.css";
import { createApi } from "./api.ts";
import { startApp } from "./app.ts";
import { createSessionStore } from "./session.ts";

// The console is served by the gateway, so the API is this page's own origin (no CORS).
const session = createSessionStore(window.sessionStorage);
const api = createApi({ baseUrl: window.location.origin, session });
const root = document.getElementById("app");
if (root) startApp(root, api, session);
