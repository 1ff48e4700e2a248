"""MedGen: translate, upscale and augment scene volumes with MedGen's MONAI bundles, tagged as AI-generated.

The widget only wires the GUI; :class:`MedGenLogic` is a thin layer over ``MedGenLib`` (command building,
child process, scene import/export, provenance attributes), which is tested outside Slicer with
``slicer-core``. MedGen itself runs in a separate process (``medgen`` CLI; the bundle list comes from
``medgen bundle list --json``), never in Slicer's Python, and is installed on first use after asking once.
"""

import importlib
import logging
import os
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from MedGenLib import scene_io
from MedGenLib.catalog import bundle_for, bundles_by_action, find_choice, list_bundles, list_bundles_in_background
from MedGenLib.commands import ACTIONS, detect_cuda_gpus, device_advice
from MedGenLib.dependencies import (
    execute_plan,
    find_bundled_wheel,
    install_torch_with_extension,
    installed_versions,
    missing_distributions,
    plan_install,
    pytorch_extension_available,
    requirement_lines,
)
from MedGenLib.jobs import GenerationJob
from MedGenLib.panel import bundle_entries, button_state, job_options, variant_entries
from MedGenLib.process import State
from MedGenLib.progress import ErrorEvent, LogEvent, ProgressEvent, StateEvent
from MedGenLib.testing import oblique_volume

LIB_MODULES = ("MedGenLib.progress", "MedGenLib.commands", "MedGenLib.process", "MedGenLib.provenance_attributes",  # reload order
               "MedGenLib.scene_io", "MedGenLib.catalog", "MedGenLib.jobs", "MedGenLib.panel", "MedGenLib.dependencies", "MedGenLib.testing")
SETTINGS_EXECUTABLE = "MedGen/medgenExecutable"
logger = logging.getLogger(__name__)


class MedGen(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedGen")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedGen developers"]
        self.parent.helpText = _(
            "Translate, upscale or augment the selected volume with a MedGen MONAI bundle, run in a separate process "
            "(progress, cancel). Outputs are named '... (AI)' and carry MedGen.* provenance attributes, kept in scenes "
            "and NRRD files. They are AI-generated synthetic images, not for diagnostic use.")
        self.parent.acknowledgementText = _(
            "MedGen developers. Follows the patterns of SlicerMONAIAuto3DSeg and SlicerTotalSegmentator.")


@parameterNodeWrapper
class MedGenParameterNode:
    """Module state kept in the scene. Bundle and variant are chosen from lists filled at run time."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    bundle: str = ""
    variant: str = ""
    direction: Annotated[str, Choice(["a2b", "b2a"])] = "a2b"
    scale: Annotated[int, Choice([2, 4])] = 2
    upscaleAxes: Annotated[str, Choice(["inplane", "through"])] = "inplane"
    targetSpacing: Annotated[float, WithinRange(0.0, 20.0)] = 0.0
    adaptSeconds: Annotated[float, WithinRange(0.0, 600.0)] = 20.0
    gate: bool = True
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    strength: Annotated[float, WithinRange(0.05, 1.0)] = 0.3
    variantCount: Annotated[int, WithinRange(1, 20)] = 1
    forceCpu: bool = False
    keepTemporaryFiles: bool = False


class MedGenWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI wiring only: all work is done by :class:`MedGenLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic, self._parameterNode, self._parameterNodeGuiTag = None, None, None
        self._job, self._runningAction, self._gpus, self._installFirst = None, None, None, True
        self._catalog = {action: [] for action in ACTIONS}
        self._catalogFuture = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedGen.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedGenLogic()
        self._buttons = {"translate": self.ui.translateButton, "upscale": self.ui.upscaleButton, "augment": self.ui.augmentButton}
        self._buttonTexts = {action: button.text for action, button in self._buttons.items()}
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._onTimer)
        self._catalogTimer = qt.QTimer()
        self._catalogTimer.setInterval(200)
        self._catalogTimer.connect("timeout()", self._onCatalogTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for action, button in self._buttons.items():
            button.connect("clicked(bool)", lambda _checked=False, a=action: self.onActionButton(a))
        self.ui.bundleComboBox.connect("currentIndexChanged(int)", self.onBundleChanged)
        self.ui.variantComboBox.connect("currentIndexChanged(int)", self.onVariantChanged)
        self.ui.refreshBundlesButton.connect("clicked(bool)", lambda _checked=False: self.refreshBundles(install=True))
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.medgenExecutableLineEdit.text = qt.QSettings().value(SETTINGS_EXECUTABLE, "")
        self.ui.medgenExecutableLineEdit.connect("editingFinished()", self.onExecutableChanged)
        self.initializeParameterNode()
        self.refreshBundles(install=False)

    def cleanup(self) -> None:
        self._catalogTimer.stop()
        self.cleanupJob()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload MedGenLib (importlib.reload, dependencies first), then the module."""
        for name in LIB_MODULES:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanupJob(self) -> None:
        """Cancel a running job and finish it now (scene close, module cleanup)."""
        if self._job is not None:
            self._job.cancel()
            self._job.poll()
            self._onJobFinished(self._job)

    def enter(self) -> None:
        self.initializeParameterNode()
        if self._gpus is None:
            self._gpus = detect_cuda_gpus()
        self.ui.deviceStatusLabel.text = _(device_advice(self._gpus))

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.cleanupJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode: MedGenParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    # -- installing MedGen and listing its bundles ------------------------------------------------
    def installMedGen(self) -> bool:
        """Ask once (the plan's steps), then install with a progress dialog; True when MedGen is there."""
        plan = self.logic.installPlan()
        if not plan.needed:
            return True
        if not slicer.util.confirmOkCancelDisplay(plan.summary(), windowTitle=_("Install MedGen")):
            return False
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), maximum=len(plan.steps),
                                                  windowTitle=_("Installing MedGen"), labelText=_("Preparing..."))
        try:
            dialog.setCancelButton(None)  # pip cannot be interrupted safely
        except (AttributeError, TypeError, ValueError):
            pass

        def onProgress(done: int, total: int, message: str) -> None:
            dialog.labelText, dialog.maximum, dialog.value = message, max(total, 1), done
            slicer.app.processEvents()

        result = None
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to install MedGen."), waitCursor=True):
                result = self.logic.installMedGen(plan, onProgress)
        finally:
            dialog.close()
        if result is None:
            return False
        if result.restart_recommended and slicer.util.confirmYesNoDisplay(
                _("Packages that Slicer had already loaded were updated. Restart Slicer now to use them?")):
            slicer.util.restart()
        return True

    def refreshBundles(self, install: bool = False) -> None:
        """Fill the bundle chooser from ``medgen bundle list --json`` (in the background); installs MedGen first when ``install``."""
        self._catalog = {action: [] for action in ACTIONS}
        self.logic.medgenExecutable = self.ui.medgenExecutableLineEdit.text.strip() or None
        if install and self.logic.needsInstall():
            self.installMedGen()
        self._installFirst = self.logic.needsInstall()
        if self._installFirst:
            self.ui.statusLabel.text = _("MedGen is not installed yet: press a button or 'Install dependencies'.")
            self._fillBundleComboBox()
            return
        self.ui.statusLabel.text = _("Listing MedGen bundles...")
        self._catalogFuture = self.logic.startBundleListing()
        self._catalogTimer.start()
        self._fillBundleComboBox()

    def _onCatalogTimer(self) -> None:
        future = self._catalogFuture
        if future is None or not future.done():
            return
        self._catalogTimer.stop()
        self._catalogFuture = None
        try:
            self._catalog = self.logic.bundlesFromListing(future)
            count = sum(len(choices) for choices in self._catalog.values())
            self.ui.statusLabel.text = _("{count} MedGen bundles found.").format(count=count)
        except Exception as err:  # noqa: BLE001 - shown in the panel, one line
            self.ui.statusLabel.text = _("Failed to list MedGen bundles: {error}").format(error=err)
            logger.error("Failed to list MedGen bundles: %s", err)
        self._fillBundleComboBox()

    def _fillBundleComboBox(self) -> None:
        combo = self.ui.bundleComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for entry in bundle_entries(self._catalog):
            combo.addItem(entry.label, entry.data)
            if entry.tooltip:
                combo.setItemData(combo.count - 1, entry.tooltip, qt.Qt.ToolTipRole)
            try:  # group header: not selectable
                combo.model().item(combo.count - 1).setEnabled(not entry.header)
            except AttributeError:
                pass
        combo.blockSignals(wasBlocked)
        selected = self._parameterNode.bundle if self._parameterNode else ""
        index = combo.findData(selected) if selected else -1
        combo.setCurrentIndex(index if index >= 0 else (1 if combo.count > 1 else -1))
        self.onBundleChanged()

    def onBundleChanged(self, _index: int = -1) -> None:
        name = self.ui.bundleComboBox.currentData or ""
        if self._parameterNode and self._parameterNode.bundle != name:
            self._parameterNode.bundle = name
        choice = find_choice(self._catalog, name)
        combo = self.ui.variantComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        entries, hasVariants = variant_entries(choice, _)
        for entry in entries:
            combo.addItem(entry.label, entry.data)
        combo.blockSignals(wasBlocked)
        index = combo.findData(self._parameterNode.variant) if self._parameterNode else -1
        combo.setCurrentIndex(max(index, 0))
        self.onVariantChanged()  # a variant of the previous bundle does not carry over
        combo.enabled = hasVariants
        self.ui.directionComboBox.enabled = bool(choice and len(choice.directions) > 1)  # two-way bundles only
        self._checkCanApply()

    def onVariantChanged(self, _index: int = -1) -> None:
        if self._parameterNode:
            self._parameterNode.variant = self.ui.variantComboBox.currentData or ""

    def onExecutableChanged(self) -> None:
        qt.QSettings().setValue(SETTINGS_EXECUTABLE, self.ui.medgenExecutableLineEdit.text.strip())

    def onInstallDependencies(self) -> None:
        self.refreshBundles(install=True)

    # -- running ---------------------------------------------------------------------------------
    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        for action, button in self._buttons.items():
            bundle = bundle_for(self._catalog, action, p.bundle if p else "")
            button.enabled, button.toolTip = button_state(
                action, bundle, has_input=bool(p and p.inputVolume), install_first=self._installFirst, running=self._runningAction,
                scale=p.scale if p else 2, axes=p.upscaleAxes if p else "inplane", _=_)

    def onActionButton(self, action: str) -> None:
        if self._job is not None:
            self.ui.statusLabel.text = _("Cancelling...")
            self._job.cancel(wait=False)  # the timer picks up the Cancelled state
            return
        self.logic.medgenExecutable = self.ui.medgenExecutableLineEdit.text.strip() or None
        if self.logic.needsInstall() and not self.installMedGen():
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start MedGen."), waitCursor=True):
            if self._installFirst:  # just installed: list the bundles now, then run
                self._installFirst = False
                self._catalog = self.logic.bundlesByAction(refresh=True)
                self._fillBundleComboBox()
            p = self._parameterNode
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self._job = self.logic.process(
                action, p.inputVolume, p.outputVolume, bundle=p.bundle, scale=p.scale, variant=p.variant or None,
                direction=p.direction, seed=p.seed, strength=p.strength, count=p.variantCount, forceCpu=p.forceCpu,
                keepTemporaryFiles=p.keepTemporaryFiles, axes=p.upscaleAxes, targetSpacing=p.targetSpacing or None,
                adaptSeconds=p.adaptSeconds, gate=p.gate,
                catalog=self._catalog, blocking=False,
            )
            self.ui.logTextEdit.appendPlainText(self._job.command.display() if self._job.command else "")
            self._runningAction = action
            self._buttons[action].text = _("Cancel")
            self._checkCanApply()
            self._timer.start()
            self._onTimer()

    def _onTimer(self) -> None:
        job = self._job
        if job is None:
            return
        for event in job.poll():
            if isinstance(event, ProgressEvent) and event.fraction is not None:
                self.ui.progressBar.value = round(100 * event.fraction)
                self.ui.progressBar.format = f"{event.stage} %p%"
            elif isinstance(event, ErrorEvent):
                self.ui.logTextEdit.appendPlainText(f"ERROR: {event.message}")
            elif isinstance(event, LogEvent):
                self.ui.logTextEdit.appendPlainText(event.text)
            elif isinstance(event, StateEvent) and event.detail:
                self.ui.logTextEdit.appendPlainText(f"[{event.state}] {event.detail}")
        self.ui.statusLabel.text = f"{job.state.value} ({job.elapsed_s:.1f} s)"
        if job.state.finished:
            self._onJobFinished(job)

    def _onJobFinished(self, job: GenerationJob) -> None:
        self._timer.stop()
        if self._runningAction is None:
            return
        self._buttons[self._runningAction].text = self._buttonTexts[self._runningAction]
        self._job, self._runningAction = None, None
        if job.state is State.DONE:
            self.ui.progressBar.value = 100
            slicer.util.setSliceViewerLayers(background=job.result_node, fit=True)
        elif job.state is State.FAILED:
            self.ui.statusLabel.text = _("Failed ({seconds:.1f} s): {error}").format(seconds=job.elapsed_s, error=job.error)
            logger.error("MedGen failed: %s", job.error)
        self._checkCanApply()


class MedGenLogic(ScriptedLoadableModuleLogic):
    """Runs MedGen on scene volumes without the widget (``process(..., blocking=True)`` waits).
    ``processFactory``: optional ``(Command, on_event) -> MedGenProcess``, for tests to inject a runner."""

    def __init__(self, processFactory=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.processFactory = processFactory
        self.medgenExecutable = None  # None: PythonSlicer -m medgen_core.cli.main
        self._catalog = None

    def getParameterNode(self):
        return MedGenParameterNode(super().getParameterNode())

    def _executable(self):
        return [self.medgenExecutable] if self.medgenExecutable else None

    def needsInstall(self) -> bool:
        """MedGen must be installed into Slicer's Python first (no other medgen executable configured)."""
        return not self.medgenExecutable and bool(missing_distributions())

    @staticmethod
    def installPlan():
        """The first-use install steps (:func:`MedGenLib.dependencies.plan_install`) for this Slicer."""
        resources = os.path.join(os.path.dirname(__file__), "Resources")
        return plan_install(installed_versions(), requirement_lines(os.path.join(resources, "requirements.txt")),
                            wheel=find_bundled_wheel(os.path.join(resources, "wheels")),
                            pytorch_extension=pytorch_extension_available())

    @staticmethod
    def installMedGen(plan=None, onProgress=None):
        """Carry out ``plan`` (default :meth:`installPlan`) with ``slicer.util.pip_install``; returns an ``InstallResult``.
        The caller asks the user first. ``onProgress(done, total, message)``."""
        if slicer.app.testingEnabled():
            raise RuntimeError("MedGen is not installed; not installing while testing.")
        return execute_plan(plan or MedGenLogic.installPlan(), slicer.util.pip_install, install_torch_with_extension, onProgress)

    def bundlesByAction(self, refresh: bool = False) -> dict:
        """Bundles grouped by action, from ``medgen bundle list --json`` (blocking; cached)."""
        if self._catalog is None or refresh:
            self._catalog = bundles_by_action(lambda: list_bundles(self._executable()))
        return self._catalog

    def startBundleListing(self):
        """Start ``medgen bundle list --json`` in a worker thread; pass the future to :meth:`bundlesFromListing`."""
        return list_bundles_in_background(self._executable())

    def bundlesFromListing(self, future) -> dict:
        self._catalog = bundles_by_action(future.result)
        return self._catalog

    # -- processing ------------------------------------------------------------------------------
    def process(self, action, inputVolume, outputVolume=None, bundle="", scale=2, variant=None, direction="a2b",
                seed=None, forceCpu=False, keepTemporaryFiles=False, catalog=None, blocking=True, timeoutSec=None,
                onEvent=None, strength=None, count=1, axes="inplane", targetSpacing=None, adaptSeconds=None, gate=True) -> GenerationJob:
        """Run ``action`` on ``inputVolume``; the result goes to ``outputVolume`` or a new "<input> <task> (AI)" volume.

        Upscale options: ``axes`` (``"inplane"`` or ``"through"``), ``targetSpacing`` (mm, through; None = in-plane
        spacing), ``adaptSeconds`` (through; None = the CLI's default), ``gate`` (the never-worse gate).
        With ``blocking=True`` returns the finished job (check ``job.state``, ``job.result_node``,
        ``job.error``); otherwise the started job, to be driven by ``job.poll()`` from the main thread.
        """
        choice = bundle_for(catalog if catalog is not None else self.bundlesByAction(), action, bundle)
        if choice is None:
            raise ValueError(_("No MedGen bundle for '{action}' is installed.").format(action=action))
        if action == "augment" and int(count) > 1:
            outputVolume = None  # every variant gets its own new volume
        options = job_options(action, choice, scale=scale, variant=variant, direction=direction, seed=seed, strength=strength,
                              count=count, force_cpu=forceCpu, axes=axes, target_spacing=targetSpacing, adapt_seconds=adaptSeconds,
                              gate=gate)
        job = GenerationJob(
            slicer.mrmlScene, inputVolume, options, output_node=outputVolume,
            executable=[self.medgenExecutable] if self.medgenExecutable else None,
            temp_root=slicer.app.temporaryPath + "/MedGen", keep_files=keepTemporaryFiles, on_event=onEvent,
            process_factory=self.processFactory,
        )
        if blocking:
            job.run(timeoutSec)
        else:
            job.start()
        return job

    validateOutput = staticmethod(scene_io.validate_output)
    saveOutput = staticmethod(scene_io.save_output_nrrd)

    @staticmethod
    def loadOutput(path: str):
        return scene_io.load_output_nrrd(slicer.mrmlScene, path)


class MedGenTest(ScriptedLoadableModuleTest):
    """In-Slicer tests: small synthetic volumes; the model run needs MedGen installed in Slicer's Python."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_ValidateOutputReportsLostProvenance, self.test_InstallPlan, self.test_UpscaleRoundTrip):
            self.setUp()
            test()

    def test_ValidateOutputReportsLostProvenance(self) -> None:
        self.delayDisplay("validate_output catches a bare output")
        source = oblique_volume(slicer.mrmlScene)
        bare = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "bare")
        problems = MedGenLogic.validateOutput(bare, source)
        self.assertTrue(any("MedGen.AIGenerated" in p for p in problems), problems)
        self.delayDisplay("Test passed")

    def test_InstallPlan(self) -> None:
        self.delayDisplay("First-use install plan for this Slicer")
        plan = MedGenLogic.installPlan()
        for missing in missing_distributions():
            self.assertIn(missing, [step.package for step in plan.steps])
        fresh = plan_install({}, ["medgen>=0.1.0"], pytorch_extension=pytorch_extension_available())
        self.assertEqual([step.package for step in fresh.steps], ["torch", "medgen"])  # torch always first
        self.delayDisplay("Test passed")

    def test_UpscaleRoundTrip(self) -> None:
        if MedGenLogic().needsInstall():
            self.delayDisplay("MedGen is not installed in Slicer's Python: upscale test skipped")
            return
        self.delayDisplay("Upscale x2 of an oblique volume")
        source = oblique_volume(slicer.mrmlScene)
        logic = MedGenLogic()
        job = logic.process("upscale", source, scale=2, forceCpu=True, blocking=True, timeoutSec=300)
        self.assertEqual(job.state, State.DONE, job.error)
        self.assertEqual(MedGenLogic.validateOutput(job.result_node, source), [])
        self.assertTrue(job.result_node.GetName().endswith(" (AI)"))
        self.delayDisplay("Test passed")
