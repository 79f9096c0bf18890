// Starts Swagger UI (vendored from the npm package swagger-ui-dist, see LICENSE and NOTICE here) on
// this server's own OpenAPI document. No validator badge: it would send the document to another site.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
