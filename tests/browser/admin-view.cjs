// Drives Debian's Chromium through the Admin view, for tests/tests/admin_view.rs.
// Usage: node admin-view.cjs <base url> <delivery id> <drop reason> <screenshot path>
// Env: PLAYWRIGHT_CORE (the playwright-core module directory), CHROMIUM (the browser).
// Prints one JSON line: what it saw. Fails (exit 1) on any browser error.
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

// Flags from /work/shared/notes: no sandbox in a container, and no background
// networking (it floods a closed network with refused connections).
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

async function main() {
  const [base, id, reason, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ARGS,
    timeout: 60000,
  });
  try {
    const page = await (await browser.newContext()).newPage();
    page.setDefaultTimeout(30000);
    await page.goto(`${base}/ui/`);
    const listed = await page.locator('#deliveries a.delivery').count();
    await page.locator('#deliveries a.delivery', { hasText: id }).first().click();
    await page.waitForURL(/\/ui\/deliveries\/[^?]+\?route=/);
    const reasons = await page.locator('td.reason').allTextContents();
    const reasonShown = reasons.some((r) => r.includes(reason));
    // The hostile subject carries <script>window.__pwned = 1</script>.
    const pwned = await page.evaluate(() => window.__pwned === 1);
    await page.screenshot({ path: screenshot, fullPage: true });

    const noJs = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
    await noJs.goto(`${base}/ui/deliveries?mailbox=${encodeURIComponent(process.env.MAILBOX || '')}`);
    const listedNoJs = await noJs.locator('#deliveries a.delivery').count();
    console.log(JSON.stringify({ listed, reasonShown, reasons, pwned, listedNoJs }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
