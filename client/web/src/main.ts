import "./style.css";
import { admin, classify } from "./api";
import { ConnectionWatch, mountBanner } from "./banner";
import { alertBox, byId, h, replace } from "./dom";
import { gate } from "./gate";
import { adminPage } from "./pages/admin";
import { chainPage } from "./pages/chain";
import { connectionsPage } from "./pages/connections";
import { signinPage } from "./pages/signin";
import { ticksPage } from "./pages/ticks";
import { navigate, parseHash, type Page } from "./router";
import { clearKey, getKey } from "./session";

const watch = new ConnectionWatch();
let isAdmin: boolean | undefined;

const NAV: { path: string; label: string; adminOnly?: boolean }[] = [
  { path: "auth", label: "Connections" },
  { path: "chain", label: "Option chain" },
  { path: "ticks", label: "Live ticks" },
  { path: "admin", label: "Token health", adminOnly: true },
];

function shell(): void {
  const app = byId("app");
  replace(
    app,
    h(
      "header",
      { class: "topbar", id: "topbar" },
      h("a", { class: "brand", href: "#/auth" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "feedgate"),
      h(
        "nav",
        { class: "nav", id: "nav", "aria-label": "Main" },
        NAV.map((n) => h("a", { href: `#/${n.path}`, id: `nav-${n.path}`, "data-testid": `nav-${n.path}`, "data-path": n.path, hidden: n.adminOnly ? true : null }, n.label)),
      ),
      h("button", { class: "link signout", type: "button", id: "sign-out", "data-testid": "sign-out", onclick: signOut }, "Sign out"),
    ),
    h("div", { class: "banner", id: "connection-banner", "data-testid": "connection-banner", role: "status" }),
    h("main", { class: "page", id: "page" }),
    h("div", { id: "prompt-root", hidden: true }),
  );
  mountBanner(byId("connection-banner"));
  gate.mount(byId("prompt-root"), onSignedOut);
}

function setSignedInChrome(signedIn: boolean): void {
  document.body.classList.toggle("signed-out", !signedIn);
  byId("nav").hidden = !signedIn;
  byId("sign-out").hidden = !signedIn;
  byId("connection-banner").hidden = !signedIn;
}

function showAdminLink(show: boolean): void {
  byId("nav-admin").hidden = !show;
}

/** Admin keys can call AdminService; PermissionDenied means not an admin. */
async function checkAdmin(): Promise<void> {
  try {
    await admin.getValidationCacheStats({});
    isAdmin = true;
  } catch (e) {
    const f = classify(e);
    if (f.kind === "bad-key") gate.badKey();
    isAdmin = false;
  }
  showAdminLink(isAdmin);
}

function onSignedIn(): void {
  isAdmin = undefined;
  watch.start();
  void checkAdmin();
}

function onSignedOut(): void {
  watch.halt();
  isAdmin = false;
  showAdminLink(false);
}

function signOut(): void {
  clearKey();
  gate.reset();
  onSignedOut();
  navigate("signin");
}

const pages: Record<string, Page> = {
  signin: signinPage(onSignedIn),
  auth: connectionsPage,
  chain: chainPage,
  ticks: ticksPage,
  admin: adminPage(() => {
    isAdmin = false;
    showAdminLink(false);
  }),
};

let cleanup: (() => void) | void;

function route(): void {
  const { path, query } = parseHash();
  const signedIn = !!getKey();
  if (!signedIn && path !== "signin") {
    window.location.replace("#/signin");
    return;
  }
  if (signedIn && (path === "" || path === "signin") && !query.get("expired")) {
    window.location.replace("#/auth");
    return;
  }
  const page = pages[path];
  if (!page) {
    window.location.replace("#/auth");
    return;
  }
  if (typeof cleanup === "function") cleanup();
  cleanup = undefined;
  setSignedInChrome(signedIn && path !== "signin");
  for (const a of document.querySelectorAll<HTMLAnchorElement>("#nav a")) {
    if (a.dataset.path === path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.body.dataset.page = path;
  const root = byId("page");
  replace(root);
  const flash = sessionStorage.getItem("feedgate.flash");
  if (flash && path !== "signin") {
    sessionStorage.removeItem("feedgate.flash");
    root.append(alertBox("success", "flash", flash));
  }
  cleanup = page(root, query);
  document.title = `${NAV.find((n) => n.path === path)?.label ?? "Sign in"} · feedgate`;
}

shell();
if (getKey()) onSignedIn();
else setSignedInChrome(false);
window.addEventListener("hashchange", route);
route();
